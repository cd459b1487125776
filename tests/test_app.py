"""The composition root (daemon/app.py) in process: the order its stages start and stop in, a camera's failure
kept to itself, and the exit code each way of ending gives. The real model (one detector for the module, at
imgsz 320), a real outbox in a temporary folder and finite synthetic cameras; the broker is a closed port, so
the publisher retries throughout and the events stay in the outbox, as on a line whose broker is down."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.app import App, open_outbox
from daemon.detect.model import Detector
from daemon.exitcodes import ExitCode, FailureKind
from daemon.frames import CameraState
from daemon.metrics import Metrics
from daemon.ops.health import Health
from daemon.settings import Settings
from daemon.settings.sections import ModelSettings
from tests.support.net import free_port

FRAMES = 12
FINITE = f"synthetic://line?frames={FRAMES}&realtime=false&defect_rate=0.5"


@pytest.fixture(scope="module")
def detector(model_path: Path) -> Detector:
    return Detector(ModelSettings(path=model_path, imgsz=320))


AppFactory = Callable[..., App]


@pytest.fixture
def make_app(detector: Detector, model_path: Path, tmp_path: Path) -> Iterator[AppFactory]:
    built: list[App] = []

    def make(cameras: dict[str, str], **sections: Any) -> App:
        settings = Settings.model_validate({
            "cameras": {cid: {"url": url} for cid, url in cameras.items()},
            "model": {"path": model_path, "imgsz": 320},
            "mqtt": {"url": f"mqtt://127.0.0.1:{free_port()}", "reconnect_max_s": 1},  # nothing listens
            "outbox": {"dir": str(tmp_path / f"outbox{len(built)}")}, "http": {"enabled": False},
            "events": {"stats_interval_s": 0}, "pipeline": {"shutdown_timeout_s": 0.5}, **sections})
        metrics = Metrics()
        app = App(settings, threading.Event(), detector, open_outbox(settings), metrics=metrics,
                  health=Health(metrics))
        built.append(app)
        return app

    yield make
    for app in built:  # a failed assertion must not leave threads behind for the next test
        app.stop.set()
        app.outbox.close()  # idempotent: a run that ended closed it already


def _inspected(app: App, camera_id: str) -> int:
    return int(app.metrics.value("linewatch_frames_inspected_total", camera=camera_id))


def _record(app: App) -> tuple[list[str], list[str]]:
    """Instrument each stage's start and stop (the real ones still run) to see the order the root calls them."""
    started: list[str] = []
    stopped: list[str] = []
    for stage in app.stages:
        start, stop = stage.start, stage.stop

        def on_start(start: Callable[[], None] = start, name: str = stage.name) -> None:
            started.append(name)
            start()

        def on_stop(deadline: float | None = None, stop: Callable[..., None] = stop, name: str = stage.name) -> None:
            stopped.append(name)
            stop(deadline)

        stage.start, stage.stop = on_start, on_stop  # type: ignore[method-assign]
    return started, stopped


def test_consumers_start_before_their_producers_and_stop_after_them_and_every_stage_ends(
    make_app: AppFactory,
) -> None:
    app = make_app({"a": FINITE + "&seed=1", "b": FINITE + "&seed=2"}, jobs={"enabled": True},
                   snapshots={"mode": "crop"})
    names = [stage.name for stage in app.stages]
    # The publisher first, then each camera's consumers (the snapshot encoder outlives the job stage, which
    # outlives the event stage), then the detector, then the captures: nothing is produced before its consumer runs
    assert names == ["publish:mqtt", "snapshots:a", "jobs:a", "events:a", "snapshots:b", "jobs:b", "events:b",
                     "detect", "capture:a", "capture:b"]
    started, stopped = _record(app)
    assert app.run() == ExitCode.OK  # both files ended
    assert started == names and stopped == names[::-1]
    assert not any(stage.alive for stage in app.stages)
    assert _inspected(app, "a") == _inspected(app, "b") == FRAMES  # files lose no frame


def test_a_camera_that_can_never_work_is_reported_alone_and_the_other_inspects_every_frame(
    make_app: AppFactory,
) -> None:
    # No V4L2 node exists here: /dev/video99 stands for an unplugged camera (a wiring failure)
    app = make_app({"bad": "/dev/video99", "good": FINITE})
    assert app.run() == ExitCode.OK  # the good camera's file ended; the bad one did not decide the exit code
    bad, good = app.pipelines
    assert bad.capture.failure is not None and bad.capture.failure.kind is FailureKind.CAMERA_WIRING
    assert bad.capture.status.state is CameraState.OFFLINE and "/dev/video99" in bad.capture.status.reason
    assert good.capture.failure is None and _inspected(app, "good") == FRAMES


def test_when_no_camera_can_work_the_daemon_stops_with_exit_4(make_app: AppFactory) -> None:
    app = make_app({"a": "/dev/video97", "b": "/dev/video98"})
    assert app.run() == ExitCode.CAMERA
    assert app.stop.is_set() and not any(stage.alive for stage in app.stages)


def test_a_stage_that_crashes_stops_every_camera_and_exits_1(make_app: AppFactory,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app({"a": "synthetic://line?fps=20&seed=1", "b": "synthetic://line?fps=20&seed=2"})
    crashing = app.pipelines[0].events
    handle = crashing._handle
    seen = threading.Event()

    def crash_at_the_fifth(result: Any) -> None:
        if result.frame.seq >= 4:
            seen.set()
            raise RuntimeError("injected")
        handle(result)

    monkeypatch.setattr(crashing, "_handle", crash_at_the_fifth)
    assert app.run() == ExitCode.INTERNAL  # live cameras: only the crash ends this run
    assert seen.is_set() and crashing.failure is not None and crashing.failure.kind is FailureKind.BUG
    assert crashing.failure.stage == "events:a" and "injected" in crashing.failure.reason
    assert not any(stage.alive for stage in app.stages)


def test_a_plc_port_that_cannot_be_bound_exits_3_before_any_stage_starts(make_app: AppFactory) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = make_app({"a": FINITE}, jobs={"enabled": True},
                       modbus={"enabled": True, "host": "127.0.0.1", "port": port})
        assert app.run() == ExitCode.BOOT
    assert not any(stage.started for stage in app.stages)
