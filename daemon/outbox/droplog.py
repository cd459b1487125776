"""Drops in the log as ranges: at most one line per second per kind and reason, however many drops there are.

On a full disk every append can drop one old event; a line each (822 of them in one 75 s run) buries the log and
costs a write per event. Each drop is counted at once (`on_drop`, the metrics); its line waits until a second
has gone by since the last line of its kind and reason, merged with the drops since: per camera the first and
last seq and how many (acknowledged events in between are not counted, so `count` can be less than the span).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from daemon.outbox.types import DropReport

log = logging.getLogger("daemon.outbox")

INTERVAL_S = 1.0


@dataclass
class _Merged:
    drops: int = 0
    dropped: int = 0
    dropped_bytes: int = 0
    cameras: dict[str, list[int]] = field(default_factory=dict)  # camera -> [first_seq, last_seq, count]
    since: float = 0.0

    def add(self, report: DropReport) -> None:
        self.drops += 1
        self.dropped += report.dropped
        self.dropped_bytes += report.dropped_bytes
        for span in report.cameras:
            merged = self.cameras.setdefault(span.camera_id, [span.first_seq, span.last_seq, 0])
            merged[0], merged[1] = min(merged[0], span.first_seq), max(merged[1], span.last_seq)
            merged[2] += span.count


class DropLog:
    def __init__(self, interval_s: float = INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()  # the event and snapshot threads append; the publisher sweeps
        self._pending: dict[tuple[str, str], _Merged] = {}
        self._last_line: dict[tuple[str, str], float] = {}

    def add(self, report: DropReport) -> None:
        key = (report.kind, report.reason.value)
        with self._lock:
            merged = self._pending.setdefault(key, _Merged(since=self._clock()))
            merged.add(report)
        self.flush()

    def flush(self, *, everything: bool = False) -> None:
        """Write the lines that are due (a second after their kind's last one), or all that wait."""
        now = self._clock()
        with self._lock:
            due = [key for key in self._pending
                   if everything or now - self._last_line.get(key, -self._interval_s) >= self._interval_s]
            lines = [(key, self._pending.pop(key)) for key in due]
            for key in due:
                self._last_line[key] = now
        for (kind, reason), merged in lines:
            log.warning("outbox_dropped", extra={
                "reason": reason, "kind": kind, "dropped": merged.dropped, "dropped_bytes": merged.dropped_bytes,
                "cameras": merged.cameras, "drops": merged.drops, "over_s": round(now - merged.since, 3)})
