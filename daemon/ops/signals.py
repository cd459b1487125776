"""Signal handling: the handler only sets flags; the main loop does the work, logging included.

Logging inside a handler is a re-entrant write: the signal can land while the main thread is halfway through
writing a log line to the same stream. So the handler records the signal and sets the stop event; the main
loop calls `report()` to log what arrived. A second SIGTERM/SIGINT forces the exit with code 130 at once
(for the operator whose shutdown is stuck on a dead disk or camera): `os._exit` writes nothing.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

from daemon.exitcodes import ExitCode
from daemon.logs import get_logger

log = get_logger("linewatch.signals")


class StopSignals:
    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self.received: list[int] = []  # appended by the handler; read by the main loop
        self._reported = 0

    def install(self) -> StopSignals:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, _: FrameType | None) -> None:
        self.received.append(signum)
        if len(self.received) > 1:
            # One pre-formatted write() and out: no logging machinery (and none of its locks) in a handler.
            os.write(1, b'{"event": "shutdown_forced", "level": "warning", "logger": "linewatch.signals"}\n')
            os._exit(ExitCode.FORCED)
        self._stop.set()

    def report(self) -> None:
        """Log the signals that arrived since the last call (main loop only)."""
        for signum in self.received[self._reported:]:
            log.info("shutdown_requested", signal=signal.Signals(signum).name)
            self._reported += 1


def install_stop_handlers(stop: threading.Event) -> StopSignals:
    return StopSignals(stop).install()
