"""The outbox's own clock, for ages: a wall-clock step must not age the backlog out.

A board without an RTC boots in 1970 (or at the time fake-hwclock saved) and NTP steps the clock forward once
the network is up, by years or by the hours it was off. Ages measured with the wall clock would jump with it
and the age bound would wipe every waiting event at the step. This clock runs with the monotonic clock while
the process runs, and carries on from its last reading (kept in the file) across restarts: a downtime counts
only as far as the wall clock says it went forward, never backwards.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


class OutboxClock:
    def __init__(self, conn: sqlite3.Connection, wall: Callable[[], float], monotonic: Callable[[], float]) -> None:
        """Read the clock's last reading from the file (in an open transaction); never behind a stored row."""
        self._wall = wall
        self._monotonic = monotonic
        elapsed, then = conn.execute("SELECT elapsed, wall FROM clock WHERE id = 1").fetchone()
        newest = conn.execute("SELECT created_clock FROM events ORDER BY id DESC LIMIT 1").fetchone()  # in clock order
        gap = wall() - float(then)  # the downtime, as far as the wall clock can tell
        self._base = max(float(elapsed) + max(0.0, gap), float(newest[0]) if newest else 0.0)
        self._started = monotonic()

    def now(self) -> float:
        return self._base + (self._monotonic() - self._started)

    def save(self, conn: sqlite3.Connection) -> None:
        """Record this reading (in an open write transaction), for the next start."""
        conn.execute("UPDATE clock SET elapsed = ?, wall = ? WHERE id = 1", (self.now(), self._wall()))
