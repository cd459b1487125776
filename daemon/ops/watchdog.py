"""The capture watchdog: notices a capture thread stuck inside a native call (OpenCV/FFmpeg/V4L2).

Python cannot interrupt a thread blocked in C. When a read or open has not returned long after its own
deadline, the only honest move is to say so (status `stalled`) and exit with ExitCode.WATCHDOG so that
systemd or Docker restarts the process, rather than keep running blind while looking healthy.
"""

from __future__ import annotations

import time

from daemon.logs import get_logger
from daemon.sources.capture import CaptureStage

log = get_logger("linewatch.watchdog")


class CaptureWatchdog:
    def __init__(self, capture: CaptureStage, limit_s: float) -> None:
        self._capture = capture
        self.limit_s = limit_s

    def check(self, now: float | None = None) -> str | None:
        """A reason string when the capture thread is stuck, else None."""
        since = self._capture.native_call_since
        if since is None:
            return None
        stuck_for = (time.monotonic() if now is None else now) - since
        if stuck_for < self.limit_s:
            return None
        reason = f"capture stuck in a native call for {stuck_for:.1f} s (limit {self.limit_s:.1f} s)"
        log.critical("capture_stalled", reason=reason, camera_id=self._capture.camera_id)
        return reason
