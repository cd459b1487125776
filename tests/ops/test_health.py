"""The health verdicts on their own (daemon/ops/health.py): what makes the daemon not live, what makes it not
ready, and the systemd status line. Real stage threads; a camera is a small object with the probe's fields (a
real capture needs a camera, which the integration tier has)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from daemon.exitcodes import FailureKind
from daemon.frames import CameraState, CameraStatus, utc_now
from daemon.lifecycle import StageThread
from daemon.metrics import Metrics
from daemon.ops.health import Health


class Idle(StageThread):
    """A stage that waits for the stop event: alive until then."""

    def run(self) -> None:
        self._stop.wait()


@dataclass
class Camera:
    camera_id: str
    state: CameraState = CameraState.ONLINE
    last_frame_mono: float | None = field(default_factory=time.monotonic)
    stall_timeout_s: float = 5.0

    @property
    def status(self) -> CameraStatus:
        return CameraStatus(self.camera_id, self.state, "streaming" if self.state is CameraState.ONLINE else "gone",
                            utc_now())


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def test_a_stage_stuck_in_one_unit_of_work_past_its_limit_makes_the_daemon_not_live(stop: threading.Event) -> None:
    health, stage = Health(Metrics()), Idle("detect-0", stop)
    health.watch_stage(stage, limit_s=2.0)
    stage.start()
    assert health.liveness().ok
    with stage.progress.busy():
        assert health.liveness(time.monotonic() + 1.0).ok
        verdict = health.liveness(time.monotonic() + 3.0)
    assert not verdict.ok and "detect-0 stuck in one unit of work" in verdict.reasons[0]
    assert verdict.body()["stages"]["detect-0"]["state"] == "wedged"
    assert health.liveness().ok, "the unit of work ended: live again"


def test_a_failed_stage_is_not_live_unless_it_is_one_cameras_own(stop: threading.Event) -> None:
    health = Health(Metrics())
    shared, capture, stalled = Idle("events", stop), Idle("capture:a", stop), Idle("capture:b", stop)
    for stage in (capture, stalled):
        stage.on_failure = lambda _: None  # a camera of several: its failure is its own
        health.watch_stage(stage, 5.0, isolated=True)
    health.watch_stage(shared, 5.0)
    capture.fail(FailureKind.CAMERA_WIRING, "no such device")
    assert health.liveness().ok, "an isolated camera's failure shows in readiness, not liveness"
    stalled.fail(FailureKind.STALLED, "read stuck in native code")
    assert [s.name for s, _ in health.unlive_stages()] == ["capture:b"], "a stuck thread is never isolated"
    shared.fail(FailureKind.BUG, "boom")
    assert {s.name for s, _ in health.unlive_stages()} == {"capture:b", "events"}


def test_a_stage_that_ended_is_not_live_unless_its_frames_ended(stop: threading.Event) -> None:
    health = Health(Metrics())
    done, ended = threading.Event(), Idle("capture:file", threading.Event())
    health.watch_stage(ended, 5.0, may_end=done.is_set)
    ended.start()
    ended._stop.set()  # the stage returns from run()
    assert ended.join(5)
    assert not health.liveness().ok and "capture:file is not running" in health.liveness().reasons[0]
    done.set()
    assert health.liveness().ok, "a file that ended is allowed to end"


def test_ready_needs_the_model_every_camera_fresh_and_somewhere_for_events_to_go() -> None:
    health, camera = Health(Metrics()), Camera("press1")
    health.watch_camera(camera)
    connected, accepting = [False], [True]
    health.watch_delivery(lambda: connected[0], lambda: accepting[0])
    assert health.readiness().reasons == ("model not loaded and warmed up yet",)
    health.model_ready.set()
    assert health.readiness().ok, "a broker outage is not unready while the outbox accepts"
    camera.last_frame_mono = time.monotonic() - 6.0
    assert "press1: no frame within its stall timeout (5 s)" in health.readiness().reasons[0]
    camera.state, camera.last_frame_mono = CameraState.RECONNECTING, time.monotonic()
    assert health.readiness().reasons == ("camera press1 is reconnecting: gone",)
    camera.state, accepting[0] = CameraState.ONLINE, False
    assert health.readiness().reasons == ("broker not connected and the outbox is not accepting (disk full)",)
    connected[0] = True
    verdict = health.readiness()
    assert verdict.ok and verdict.body()["cameras"]["press1"]["state"] == "online"


def test_the_status_line_names_each_camera_its_rate_the_broker_and_the_outbox() -> None:
    metrics = Metrics()
    health = Health(metrics)
    health.watch_camera(Camera("press1"))
    health.watch_delivery(lambda: True, lambda: False)
    assert health.status_line(100.0) == "press1 online, mqtt up, outbox 0, disk full"
    metrics.frames_inspected.labels("press1").inc(30)
    assert health.status_line(102.0) == "press1 online 15.0 fps, mqtt up, outbox 0, disk full"
