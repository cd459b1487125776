"""Exit codes a supervisor can trust (issue 8, section 1): each bug that was found has its test here.

The crash tests run the real daemon as a process with one bug planted (tests/support/faults): the exit code
is what systemd's Restart=on-failure and RestartPreventExitStatus= act on, so it is checked where they see it.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.exitcodes import ExitCode, FailureKind, StageFailure, exit_code_for
from daemon.frames import Frame, Inference, utc_now
from daemon.handoff import DropPolicy, Handoff
from daemon.metrics import Metrics
from daemon.ops import signals
from daemon.pipeline import frame_policy
from daemon.settings import load_settings
from tests.support.mosquitto import Mosquitto
from tests.support.procs import DaemonProcess

FAULTS = str(Path(__file__).resolve().parent / "support" / "faults")


def faulty_env(daemon_env: Callable[..., dict[str, str]], fault: str, broker_url: str) -> dict[str, str]:
    env = daemon_env("synthetic://line?fps=15", broker_url, LW_TEST_FAULT=fault)
    env["PYTHONPATH"] = FAULTS + os.pathsep + os.environ.get("PYTHONPATH", "")
    return env


@pytest.mark.integration
def test_a_crash_of_the_publisher_thread_exits_1_so_the_supervisor_restarts_it(
    mosquitto: Mosquitto, daemon_factory: Callable[..., DaemonProcess], daemon_env: Callable[..., dict[str, str]]
) -> None:
    # Before the fix the publisher caught its own crash and set stop; App only looked at detect and events,
    # so the process exited 0 and Restart=on-failure never restarted it.
    daemon = daemon_factory(faulty_env(daemon_env, "publisher", mosquitto.url))
    assert daemon.wait(timeout=120) == ExitCode.INTERNAL, daemon.describe()
    failed = daemon.wait_for_event("stage_failed", 1, stage="publish:mqtt")
    assert failed["kind"] == "bug" and "planted bug in the publisher" in failed["reason"]


@pytest.mark.integration
def test_a_bug_in_the_capture_stage_exits_1_not_the_camera_wiring_code(
    daemon_factory: Callable[..., DaemonProcess], daemon_env: Callable[..., dict[str, str]]
) -> None:
    # Before the fix any exception in capture was wrapped as SourceFatal: exit 4, which the unit never
    # restarts. A bug is exit 1; 4 stays for wiring that can never work.
    from tests.support.net import free_port

    daemon = daemon_factory(faulty_env(daemon_env, "capture", f"mqtt://127.0.0.1:{free_port()}"))
    assert daemon.wait(timeout=120) == ExitCode.INTERNAL, daemon.describe()
    failed = daemon.wait_for_event("stage_failed", 1, stage="capture:synthetic-line")
    assert failed["kind"] == "bug" and "planted bug in a source" in failed["reason"]


@pytest.mark.parametrize("word", ["no", "off", "false", "0", "NO"])
def test_an_offline_synthetic_line_gets_the_lossless_hand_off_whatever_word_says_so(
    word: str, monkeypatch: pytest.MonkeyPatch, model_path: Path
) -> None:
    # Before the fix sources/url.py string-matched only `false` and `0`: `realtime=no` got `latest` and
    # dropped frames, while the line itself parsed it as offline.
    monkeypatch.setenv("LINEWATCH_CAMERA__URL", f"synthetic://line?realtime={word}&frames=10")
    monkeypatch.setenv("LINEWATCH_MODEL__PATH", str(model_path))
    settings = load_settings()
    assert not settings.camera.is_live
    assert frame_policy(settings.camera_configs[0].camera) is DropPolicy.WAIT


@pytest.mark.slow
def test_an_inference_the_event_stage_never_takes_is_counted_and_logged(model_path: Path) -> None:
    # Before the fix DetectStage ignored a False from Handoff.put: at shutdown an inference could vanish.
    from daemon.detect.model import Detector
    from daemon.detect.stage import DetectStage, Lane
    from daemon.handoff import Bell
    from daemon.settings import ModelSettings

    stop = threading.Event()
    frames: Handoff[Frame] = Handoff("frames:t", 4, DropPolicy.WAIT, stop)
    results: Handoff[Inference] = Handoff("results:t", 1, DropPolicy.WAIT, stop)
    image = np.zeros((240, 320, 3), dtype=np.uint8)
    image.setflags(write=False)
    assert results.put(Inference(Frame("t", 0, image, 0.0, utc_now()), (), 1.0))  # the events side is full
    assert frames.put(Frame("t", 1, image, 0.0, utc_now()))
    frames.close()
    stop.set()  # stopping: the full results hand-off refuses the next result instead of waiting
    metrics = Metrics()
    stage = DetectStage(Detector(ModelSettings(path=model_path)), [Lane("t", frames, results)], Bell(), stop,
                        metrics=metrics)
    stage.start()
    assert stage.join(60)
    assert metrics.value("linewatch_frames_inspected_total", camera="t") == 1
    assert metrics.value("linewatch_inferences_lost_total", camera="t") == 1


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        return lambda *args, **kwargs: self.calls.append((level, args))


def test_the_signal_handler_only_sets_flags_and_the_main_loop_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before the fix the handler logged: a re-entrant write to stdout if the signal landed mid-line.
    recorder = _Recorder()
    monkeypatch.setattr(signals, "log", recorder)
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        handlers = signals.install_stop_handlers(stop)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5), "the handler did not set the stop event"
        assert recorder.calls == [], "the handler logged"
        handlers.report()  # what the main loop does on its next tick
        assert recorder.calls == [("info", ("shutdown_requested",))]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_failure_kinds_map_to_the_documented_exit_codes_in_one_place() -> None:
    def failure(kind: FailureKind) -> list[StageFailure]:
        return [StageFailure("stage:x", kind, "why")]

    assert exit_code_for([]) is ExitCode.OK
    assert exit_code_for(failure(FailureKind.BUG)) is ExitCode.INTERNAL
    assert exit_code_for(failure(FailureKind.CAMERA_WIRING)) is ExitCode.CAMERA
    assert exit_code_for(failure(FailureKind.STALLED)) is ExitCode.WATCHDOG
    assert exit_code_for(failure(FailureKind.BOOT)) is ExitCode.BOOT
    assert exit_code_for(failure(FailureKind.CONFIG)) is ExitCode.CONFIG


def test_the_cameras_failures_decide_the_exit_code_only_when_they_must() -> None:
    # Found in review: a wiring error at boot on camera a, then a stall on camera b, exited 4 (do not restart)
    # because the earliest failure decided; a stall must restart (5).
    from daemon.exitcodes import StageFailure, deciding_camera_failures

    wiring = StageFailure("capture:a", FailureKind.CAMERA_WIRING, "no /dev/video9", at=1.0)
    stall = StageFailure("capture:b", FailureKind.STALLED, "stuck in read", at=2.0)
    bug = StageFailure("capture:b", FailureKind.BUG, "ValueError", at=3.0)
    assert deciding_camera_failures([wiring], any_camera_usable=True) == []  # isolated: the others go on
    assert exit_code_for(deciding_camera_failures([wiring], any_camera_usable=False)) == ExitCode.CAMERA
    assert exit_code_for(deciding_camera_failures([wiring, stall], any_camera_usable=False)) == ExitCode.WATCHDOG
    assert exit_code_for(deciding_camera_failures([wiring, stall], any_camera_usable=True)) == ExitCode.WATCHDOG
    assert exit_code_for(deciding_camera_failures([wiring, bug], any_camera_usable=False)) == ExitCode.INTERNAL


@pytest.mark.integration
def test_a_wedged_detector_ends_a_bare_process_with_exit_5_after_the_documented_time_unhealthy(
    mosquitto: Mosquitto, daemon_factory: Callable[..., DaemonProcess], daemon_env: Callable[..., dict[str, str]]
) -> None:
    """Before: a wedged stage only turned /healthz to 503 and stopped WATCHDOG=1. Under Docker's on-failure
    (which ignores health) or as a bare process the daemon stayed up, blind, for ever."""
    from tests.integration.ops_helpers import wait_probe
    from tests.support.net import free_port

    port = free_port()
    env = faulty_env(daemon_env, "detector_hang", mosquitto.url)
    env.update(LINEWATCH_HTTP__PORT=str(port), LINEWATCH_PIPELINE__WEDGE_TIMEOUT_S="2",
               LINEWATCH_PIPELINE__UNHEALTHY_EXIT_S="3")
    daemon = daemon_factory(env)  # no NOTIFY_SOCKET: nothing but the daemon itself watches it
    unhealthy = wait_probe(port, "/healthz", lambda code, body: code == 503, 120)
    assert any(reason.startswith("detect stuck in one unit of work") for reason in unhealthy["reasons"]), unhealthy
    assert daemon.wait(timeout=60) == ExitCode.WATCHDOG, daemon.describe()
    gave_up = daemon.wait_for_event("unhealthy_exit", 1)
    assert gave_up["limit_s"] == 3 and gave_up["unhealthy_s"] >= 3
    assert any(stage.startswith("detect stuck") for stage in gave_up["stages"]), gave_up


@pytest.mark.integration
def test_a_hung_tls_handshake_with_the_broker_counts_as_busy_and_ends_in_exit_5(
    black_hole: Any, daemon_factory: Callable[..., DaemonProcess], daemon_env: Callable[..., dict[str, str]]
) -> None:
    """The broker accepts TCP and never answers the TLS handshake: the publisher sits in connect(), which was
    not marked busy, so the stage looked idle and healthy."""
    env = daemon_env("synthetic://line?fps=10", f"mqtts://127.0.0.1:{black_hole.port}",
                     LINEWATCH_PIPELINE__WEDGE_TIMEOUT_S="1", LINEWATCH_PIPELINE__UNHEALTHY_EXIT_S="2",
                     LINEWATCH_MQTT__RECONNECT_MIN_S="0.1", LINEWATCH_MQTT__RECONNECT_MAX_S="0.2")
    daemon = daemon_factory(env)
    assert daemon.wait(timeout=120) == ExitCode.WATCHDOG, daemon.describe()
    gave_up = daemon.wait_for_event("unhealthy_exit", 1)
    assert any(stage.startswith("publish:mqtt stuck in one unit of work") for stage in gave_up["stages"]), gave_up
