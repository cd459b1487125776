"""One camera's pipeline: its capture, its frame hand-off, its event stage (and snapshot encoder), its status.

    capture ──frames (slot or queue)──► [the shared detector] ──results──► events ──► outbox
                                                                            └──► snapshots ──► outbox

The composition root (app.py) builds one per camera and one detector thread for all of them. A camera's
failure is its own: its capture reports it on the camera's status topic and the other cameras go on.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from daemon.backoff import Backoff
from daemon.buffers import BufferPool
from daemon.detect.stage import Lane
from daemon.detect.tiles import Tiler
from daemon.events.job_stage import JobStage, TriggerRefused
from daemon.events.jobs import JobRules
from daemon.events.rules import Rules
from daemon.events.schema import render_stats
from daemon.events.snapshots import SnapshotStage
from daemon.events.stage import EventStage
from daemon.frames import CameraStatus, EndReason, Frame, Image, Inference, ModelInfo, Prepared
from daemon.handoff import Bell, DropPolicy, Handoff
from daemon.lifecycle import StageThread
from daemon.metrics import Metrics
from daemon.ops.watchdog import StallWatchdog
from daemon.outbox import Outbox
from daemon.settings import Settings
from daemon.settings.cameras import CameraConfig, CameraSettings
from daemon.sources.capture import CaptureStage
from daemon.sources.factory import build_source
from daemon.topics import stats_topic

# A live camera: only the freshest frame matters. One slot: a newer frame replaces the one the detector has not
# taken yet (a drop, counted), so the detector always gets the newest frame there is.
LIVE_SLOT_CAPACITY = 1
FILE_HANDOFF_CAPACITY = 8  # files and offline runs: a little read-ahead, the reader waits when full
RESULTS_CAPACITY = 64  # detector → events: events are cheap; a stall here means the disk is failing

StatsFeed = tuple[str, float, Callable[[], bytes]]  # (topic, interval, render): what the publisher sends
Prepare = Callable[[Image, BufferPool], Prepared | None]  # Detector.prepare, on the capture thread


def frame_policy(camera: CameraSettings) -> DropPolicy:
    """auto: a free-running live camera keeps the newest frame; files and triggered cameras (every frame is a part's)
    lose none."""
    if camera.handoff != "auto":
        return DropPolicy(camera.handoff)
    return DropPolicy.LATEST if camera.is_live and not camera.triggered else DropPolicy.WAIT


def handoff_capacity(camera: CameraSettings) -> int:
    """The frames a camera's hand-off holds (a pass of the detector takes up to these, shared among its streams)."""
    return LIVE_SLOT_CAPACITY if frame_policy(camera) is DropPolicy.LATEST else FILE_HANDOFF_CAPACITY


def stall_timeout_s(camera: CameraSettings) -> float:
    if camera.stall_timeout_s:
        return camera.stall_timeout_s
    return max(5.0, 10.0 / camera.fps) if camera.fps else 5.0


class CameraPipeline:
    def __init__(self, config: CameraConfig, settings: Settings, model: ModelInfo, outbox: Outbox,
                 stop: threading.Event, *, metrics: Metrics, bell: Bell,
                 on_status: Callable[[CameraStatus], None],
                 prepare: Prepare | None = None) -> None:
        camera = config.camera
        self.camera_id = camera_id = config.camera_id
        self.config = config
        self.policy = policy = frame_policy(camera)
        self.frames: Handoff[Frame] = Handoff(f"frames:{camera_id}", handoff_capacity(camera), policy, stop,
                                              on_drop=metrics.frames_dropped.labels(camera_id).inc, bell=bell)
        self.results: Handoff[Inference] = Handoff(f"results:{camera_id}", RESULTS_CAPACITY, DropPolicy.WAIT, stop)
        self.rules = rules = Rules(config.rules, model.classes, settings.model.confidence)
        self.tiler = None if camera.tiles is None else Tiler(camera.tiles, model.imgsz, keep=rules.may_hold)
        self.lane = Lane(camera_id, self.frames, self.results, self.tiler)
        prefix = settings.mqtt.topic_prefix
        release = settings.mqtt.payloads
        self.snapshots = None if settings.snapshots.mode == "off" else SnapshotStage(
            camera_id, settings.snapshots, prefix, outbox, stop, metrics)
        # a hardware-triggered camera's frames are matched to the jobs by time
        job_rules = JobRules.of(config.jobs, camera.trigger_match_ms if camera.trigger == "hardware" else 0.0)
        self.jobs = JobStage(camera_id, job_rules, model, outbox, stop, metrics,
                             max_open=config.jobs.max_open, snapshots=self.snapshots,
                             release=release) if config.jobs.enabled else None
        self._on_status = on_status
        self.events = EventStage(camera_id, model, self.results, outbox, stop, metrics,
                                 events=settings.events, snapshots=self.snapshots,
                                 rules=rules, motion_px=camera.motion_px,
                                 stream_end=self._stream_end, live=policy is DropPolicy.LATEST, jobs=self.jobs,
                                 release=release)
        stall_s = stall_timeout_s(camera)
        source = build_source(camera.source, camera.source_options())
        fire = getattr(source, "fire", None)
        if self.jobs is not None and camera.trigger == "software" and fire is not None:
            self.jobs.fire_with(fire)
        self.capture = CaptureStage(
            camera_id, source, self.frames, stop,
            backoff=Backoff(camera.backoff_initial_s, camera.backoff_max_s), stall_timeout_s=stall_s,
            # a tiled camera's tiles are letterboxed by the detector, a batch at a time; its whole frame only for
            # its full-frame pass
            on_status=self._report, metrics=metrics,
            prepare=prepare if self.tiler is None or self.tiler.full_frame else None,
            on_trigger=None if self.jobs is None else self._photo_eye,
            on_fired=None if self.jobs is None else self.jobs.bind)
        grace_s = float(getattr(source, "native_grace_s", 0.0))  # GenICam: a dead camera's command timeouts
        self.watchdog = StallWatchdog(self.capture,
                                      limit_s=max(camera.open_timeout_s, camera.read_timeout_s) + stall_s + grace_s)
        interval = settings.events.stats_interval_s
        self.stats_feed: StatsFeed | None = (
            stats_topic(prefix, camera_id), interval,
            lambda: render_stats(camera_id, interval, self.events.stats(), release)) if interval else None

    def _report(self, status: CameraStatus) -> None:
        if self.jobs is not None:
            self.jobs.camera_changed(status)  # a camera that is not online fails its open jobs: unknown
        self._on_status(status)

    def _photo_eye(self, part_id: str, frame_seq: int, captured_mono: float) -> None:
        if self.jobs is not None:
            with contextlib.suppress(TriggerRefused):  # stopping, or the stage stuck: counted and logged there
                self.jobs.trigger("photo_eye", part_id, frame_seq=frame_seq, at_mono=captured_mono)

    def _stream_end(self) -> EndReason:
        return EndReason.END_OF_STREAM if self.capture.end_reason == "end of stream" else EndReason.SHUTDOWN

    @property
    def consumers(self) -> tuple[StageThread, ...]:
        """The stages downstream of the detector, in start order."""
        # The snapshot encoder outlives the job stage (an ng verdict's picture), which outlives the event stage.
        return (*((self.snapshots,) if self.snapshots is not None else ()),
                *((self.jobs,) if self.jobs is not None else ()), self.events)

    @property
    def usable(self) -> bool:
        """False once the camera has failed on its own (wiring, a crash, a stall) and will deliver no more."""
        return self.capture.failure is None
