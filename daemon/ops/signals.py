"""Signal handling: the handler only sets the stop event; the main loop does the work.

The first SIGTERM/SIGINT asks for a graceful stop (with a deadline); a second one forces the exit with
code 130, for the operator whose shutdown is stuck on a dead disk or camera.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

from daemon.exitcodes import ExitCode
from daemon.logs import get_logger

log = get_logger("linewatch.signals")


def install_stop_handlers(stop: threading.Event) -> None:
    received: list[int] = []

    def handle(signum: int, _: FrameType | None) -> None:
        received.append(signum)
        if len(received) == 1:
            log.info("shutdown_requested", signal=signal.Signals(signum).name)
            stop.set()
            return
        log.warning("shutdown_forced", signal=signal.Signals(signum).name)
        sys.stdout.flush()
        os._exit(ExitCode.FORCED)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
