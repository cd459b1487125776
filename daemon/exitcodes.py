"""Process exit codes, and the one place that maps a kind of failure to one.

Distinct codes per cause, so a supervisor can tell a typo from a crash. systemd's unit lists CONFIG, BOOT and
CAMERA in RestartPreventExitStatus= so that a wrong setting does not restart-loop; INTERNAL and WATCHDOG are
meant to be restarted.

Every stage reports a failure as a `StageFailure` of some `FailureKind`; `exit_code_for` alone turns the
kind into the process's exit code. Health, metrics and sd_notify read the same failures.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field


class ExitCode(enum.IntEnum):
    OK = 0  # clean shutdown (signal, or the end of a finite source)
    INTERNAL = 1  # an unexpected error: a bug; the traceback is logged
    CONFIG = 2  # a setting is wrong (one line per problem on stderr); fix the configuration
    BOOT = 3  # the configuration is valid but a fatal resource failed: model will not load, CUDA missing
    CAMERA = 4  # the camera is permanently unusable (e.g. V4L2 device missing and retries disabled)
    WATCHDOG = 5  # a stage is stuck (a capture thread in a native call); exit so the supervisor restarts us
    FORCED = 130  # a second SIGINT/SIGTERM forced the exit before the graceful shutdown finished


class FailureKind(enum.Enum):
    """Why a stage stopped working. Retryable trouble (a camera or broker outage) is not a failure."""

    BUG = "bug"  # an exception nobody expected: a defect in linewatch or a library
    CONFIG = "config"  # a setting that can never work
    BOOT = "boot"  # a resource the daemon cannot run without (model, outbox database)
    CAMERA_WIRING = "camera_wiring"  # the camera can never work as configured (device missing, no GStreamer)
    STALLED = "stalled"  # a thread is stuck where Python cannot interrupt it


_EXIT_CODES: dict[FailureKind, ExitCode] = {
    FailureKind.BUG: ExitCode.INTERNAL,
    FailureKind.CONFIG: ExitCode.CONFIG,
    FailureKind.BOOT: ExitCode.BOOT,
    FailureKind.CAMERA_WIRING: ExitCode.CAMERA,
    FailureKind.STALLED: ExitCode.WATCHDOG,
}


@dataclass(frozen=True, slots=True)
class StageFailure:
    stage: str  # the stage's thread name, e.g. "capture:cam1" or "publish:mqtt"
    kind: FailureKind
    reason: str
    at: float = field(default_factory=time.monotonic)  # the first failure in time decides the exit code


def exit_code_for(failures: list[StageFailure]) -> ExitCode:
    """The exit code for a run that ended with these failures (the earliest decides; none: OK). A stage that
    fails while draining after another's failure does not change the code."""
    return _EXIT_CODES[min(failures, key=lambda f: f.at).kind] if failures else ExitCode.OK


def deciding_camera_failures(failures: list[StageFailure], any_camera_usable: bool) -> list[StageFailure]:
    """Which of the cameras' own failures decide the exit code. Each is isolated while another camera works.
    A stall always counts (only a restart frees a thread stuck in native code). Otherwise, once no camera is
    usable, the failure that left none does: a wiring error at boot on one camera and a bug later on the last
    one is a bug (restart), not wiring (do not restart)."""
    stalls = [f for f in failures if f.kind is FailureKind.STALLED]
    if stalls:
        return stalls
    if failures and not any_camera_usable:
        return [max(failures, key=lambda f: f.at)]
    return []
