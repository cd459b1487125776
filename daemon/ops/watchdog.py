"""The stall watchdog: notices a stage stuck inside one unit of work (a native camera call, above all).

Python cannot interrupt a thread blocked in C. When a read or open has not returned long after its own
deadline, the only honest move is to say so (status `stalled`) and exit with ExitCode.WATCHDOG so that
systemd or Docker restarts the process, rather than keep running blind while looking healthy.
"""

from __future__ import annotations

import time

from daemon.lifecycle import StageThread
from daemon.logs import get_logger

log = get_logger("linewatch.watchdog")


class StallWatchdog:
    def __init__(self, stage: StageThread, limit_s: float) -> None:
        self._stage = stage
        self.limit_s = limit_s

    def check(self, now: float | None = None) -> str | None:
        """A reason string when the stage is stuck, else None."""
        stuck_for = self._stage.progress.stuck_for(time.monotonic() if now is None else now)
        if stuck_for < self.limit_s or stuck_for == 0.0:
            return None
        reason = f"{self._stage.name} stuck in a native call for {stuck_for:.1f} s (limit {self.limit_s:.1f} s)"
        log.critical("capture_stalled", reason=reason, stage=self._stage.name)
        return reason


