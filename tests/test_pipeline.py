"""One camera's pipeline (daemon/pipeline.py), built from the settings without a model: which hand-off each kind of
camera gets, its stall limit, its stages and their order, what its capture prepares, how its tracks end, and its
stats feed. Real settings, a real outbox in a temporary folder, real stages (none of them started)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.app import open_outbox, warm_up_batch
from daemon.exitcodes import FailureKind
from daemon.frames import CameraStatus, EndReason, ModelInfo
from daemon.handoff import Bell, DropPolicy
from daemon.metrics import Metrics
from daemon.pipeline import CameraPipeline, frame_policy, stall_timeout_s
from daemon.settings import Settings
from daemon.topics import stats_topic
from tests.integration.payloads import validate_message

MODEL = ModelInfo("linewatch-defects", "0" * 64, 640, "cpu", ("scratch", "dent", "stain", "missing_component"))


def _settings(camera: dict[str, Any], tmp_path: Path, **sections: Any) -> Settings:
    return Settings.model_validate({"cameras": {"cam": camera}, "outbox": {"dir": str(tmp_path)}, **sections})


PipelineFactory = Callable[..., CameraPipeline]


@pytest.fixture
def make_pipeline(tmp_path: Path) -> Iterator[PipelineFactory]:
    outboxes = []

    def make(camera: dict[str, Any], prepare: Any = None, **sections: Any) -> CameraPipeline:
        settings = _settings(camera, tmp_path, **sections)
        outbox = open_outbox(settings)
        outboxes.append(outbox)
        statuses: list[CameraStatus] = []
        return CameraPipeline(settings.camera_configs[0], settings, MODEL, outbox, threading.Event(),
                              metrics=Metrics(), bell=Bell(), on_status=statuses.append, prepare=prepare)

    yield make
    for outbox in outboxes:
        outbox.close()


@pytest.mark.parametrize(("camera", "policy"), [
    ({"url": "rtsp://10.0.0.5:8554/line1"}, DropPolicy.LATEST),  # live: only the newest frame matters
    ({"url": "synthetic://line?fps=15"}, DropPolicy.LATEST),
    ({"url": "rtsp://10.0.0.5:8554/line1", "handoff": "wait"}, DropPolicy.WAIT),  # an explicit choice wins
    ({"url": "synthetic://line?realtime=false"}, DropPolicy.WAIT),  # a file-like source at full speed loses none
    ({"url": "/srv/recordings/line1.mp4", "pace": "max"}, DropPolicy.WAIT),
])
def test_a_live_camera_keeps_the_newest_frame_and_everything_else_loses_none(
    camera: dict[str, Any], policy: DropPolicy, make_pipeline: PipelineFactory, tmp_path: Path,
) -> None:
    if camera["url"].endswith(".mp4"):
        camera = {**camera, "url": str(tmp_path / "line1.mp4")}
        Path(camera["url"]).write_bytes(b"")  # the settings check that a file exists; nothing reads it here
    pipeline = make_pipeline(camera)
    assert frame_policy(pipeline.config.camera) is policy is pipeline.policy
    assert pipeline.frames.capacity == (1 if policy is DropPolicy.LATEST else 8)


FILE = {"url": "synthetic://line?realtime=false"}  # unpaced: a file's read-ahead (8 frames) waits in its hand-off


@pytest.mark.parametrize(("cameras", "streams", "max_batch", "batch"), [
    ({"a": {"url": "rtsp://10.0.0.5/a"}, "b": {"url": "rtsp://10.0.0.5/b"}}, 2, 8, 2),  # live: one frame each
    ({"a": FILE}, 1, 8, 8),  # one stream: one inference for all of the read-ahead
    ({"a": FILE}, 2, 8, 4),  # two: each stream has half of it to work on
    ({"a": FILE}, 16, 8, 1),
    ({"a": FILE, "b": {"url": "rtsp://10.0.0.5/b"}}, 1, 64, 9),
    ({"a": FILE}, 1, 3, 3),  # never beyond the setting
    ({"a": {**FILE, "tiles": {}}}, 1, 8, 1),  # its tiles are warmed up apart
])
def test_the_detector_is_warmed_up_at_the_largest_batch_a_pass_takes_from_its_cameras(
    cameras: dict[str, Any], streams: int, max_batch: int, batch: int, tmp_path: Path,
) -> None:
    settings = Settings.model_validate({"cameras": cameras, "detect": {"max_batch": max_batch},
                                       "outbox": {"dir": str(tmp_path)}})
    assert warm_up_batch(settings, streams) == batch


@pytest.mark.parametrize(("camera", "limit_s"), [
    ({"url": "rtsp://10.0.0.5/x", "stall_timeout_s": 2.5}, 2.5),  # as set
    ({"url": "rtsp://10.0.0.5/x", "fps": 1}, 10.0),  # ten frame intervals of a slow camera
    ({"url": "rtsp://10.0.0.5/x", "fps": 30}, 5.0),  # at least 5 s
    ({"url": "rtsp://10.0.0.5/x"}, 5.0),
])
def test_the_stall_limit_is_the_setting_or_ten_frame_intervals_and_never_under_5_s(
    camera: dict[str, Any], limit_s: float, tmp_path: Path,
) -> None:
    assert stall_timeout_s(_settings(camera, tmp_path).camera_configs[0].camera) == limit_s


def test_the_consumers_are_in_start_order_and_only_those_asked_for(make_pipeline: PipelineFactory) -> None:
    bare = make_pipeline({"url": "synthetic://line"})
    assert [s.name for s in bare.consumers] == ["events:cam"] and bare.jobs is None and bare.snapshots is None
    full = make_pipeline({"url": "synthetic://line"}, jobs={"enabled": True}, snapshots={"mode": "both"})
    assert [s.name for s in full.consumers] == ["snapshots:cam", "jobs:cam", "events:cam"]
    assert not any(stage.started for stage in (*full.consumers, full.capture))  # building starts nothing


def test_a_tiled_camera_s_capture_letterboxes_its_whole_frame_only_for_a_full_frame_pass(
    make_pipeline: PipelineFactory,
) -> None:
    def prepare(image: Any, pool: Any) -> None:
        return None

    assert make_pipeline({"url": "synthetic://line"}, prepare).capture._prepare is prepare
    assert make_pipeline({"url": "synthetic://line", "tiles": {}}, prepare).capture._prepare is None
    whole_too = make_pipeline({"url": "synthetic://line", "tiles": {"full_frame": True}}, prepare)
    assert whole_too.capture._prepare is prepare and whole_too.tiler is not None


@pytest.mark.parametrize(("capture_end", "track_end"), [
    ("end of stream", EndReason.END_OF_STREAM), ("shutdown", EndReason.SHUTDOWN),
    ("capture crashed: RuntimeError: x", EndReason.SHUTDOWN), ("", EndReason.SHUTDOWN),
])
def test_the_tracks_still_open_end_with_why_the_frames_stopped(capture_end: str, track_end: EndReason,
                                                               make_pipeline: PipelineFactory) -> None:
    pipeline = make_pipeline({"url": "synthetic://line"})
    pipeline.capture.end_reason = capture_end
    assert pipeline._stream_end() is track_end


@pytest.mark.parametrize(("release", "schema"), [("0.2", "stats-v2"), ("0.1", "stats-v1")])
def test_the_stats_feed_renders_the_documented_stats_of_the_release_asked_for(
    release: str, schema: str, make_pipeline: PipelineFactory,
) -> None:
    assert make_pipeline({"url": "synthetic://line"}, events={"stats_interval_s": 0}).stats_feed is None
    pipeline = make_pipeline({"url": "synthetic://line"}, events={"stats_interval_s": 2},
                             mqtt={"payloads": release})
    assert pipeline.stats_feed is not None
    topic, interval, render = pipeline.stats_feed
    assert (topic, interval) == (stats_topic("linewatch", "cam"), 2.0)
    payload = render()
    assert validate_message(topic, payload) == schema
    assert json.loads(payload)["frames_inspected"] == 0 and json.loads(payload)["fps_in"] is None  # the first


def test_a_camera_is_usable_until_its_capture_fails(make_pipeline: PipelineFactory) -> None:
    pipeline = make_pipeline({"url": "synthetic://line"})
    failures = []
    pipeline.capture.on_failure = failures.append  # as the root isolates it: the stop event stays clear
    assert pipeline.usable
    pipeline.capture.fail(FailureKind.CAMERA_WIRING, "no such device")
    assert not pipeline.usable and [f.kind for f in failures] == [FailureKind.CAMERA_WIRING]
