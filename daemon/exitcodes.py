"""Process exit codes: distinct per cause so a supervisor can tell a typo from a crash.

systemd's unit lists CONFIG and BOOT in RestartPreventExitStatus= so that a wrong setting does not
restart-loop; WATCHDOG is meant to be restarted.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0  # clean shutdown (signal, or the end of a finite source)
    INTERNAL = 1  # an unexpected error: a bug; the traceback is logged
    CONFIG = 2  # a setting is wrong (one line per problem on stderr); fix the configuration
    BOOT = 3  # the configuration is valid but a fatal resource failed: model will not load, CUDA missing
    CAMERA = 4  # the camera is permanently unusable (e.g. V4L2 device missing and retries disabled)
    WATCHDOG = 5  # a capture thread is stuck in a native call; exit so the supervisor restarts us
    FORCED = 130  # a second SIGINT/SIGTERM forced the exit before the graceful shutdown finished
