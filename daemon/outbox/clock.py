"""The outbox's own clock, for ages: a wall-clock step must not age the backlog out.

A board without an RTC boots in 1970 (or at the time fake-hwclock saved) and NTP steps the clock forward once
the network is up, by years or by the hours it was off. Ages measured with the wall clock would jump with it
and the age bound would wipe every waiting event at the step. This clock runs with the monotonic clock while
the process runs and carries on from its last reading, kept in the file, across restarts. How much time a
restart adds:
- the same boot (the daemon restarted): what the system's monotonic clock says went by, exact;
- another boot: what the wall clock says went by, but only when both readings are set (after WALL_FLOOR) and
  it went forward; otherwise nothing. A board that ran offline in 1970 and reboots into the right time does
  not age its backlog by 56 years.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

WALL_FLOOR = 1_704_067_200.0  # 2024-01-01 UTC: a wall-clock reading before it was never set (no RTC, no NTP yet)
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    """This boot's id (Linux), "" where there is none: then every start counts as a new boot."""
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""


class OutboxClock:
    def __init__(self, conn: sqlite3.Connection, wall: Callable[[], float], monotonic: Callable[[], float],
                 boot: str) -> None:
        """Read the clock's last reading from the file (in an open transaction); never behind a stored row."""
        self._wall = wall
        self._monotonic = monotonic
        self._boot = boot
        elapsed, then, saved_boot, saved_monotonic = conn.execute(
            "SELECT elapsed, wall, boot_id, monotonic FROM clock WHERE id = 1").fetchone()
        now, started = wall(), monotonic()
        if boot and boot == saved_boot:
            gap = started - float(saved_monotonic)
        elif float(then) >= WALL_FLOOR and now >= WALL_FLOOR:
            gap = now - float(then)
        else:
            gap = 0.0
        newest = conn.execute("SELECT created_clock FROM events ORDER BY id DESC LIMIT 1").fetchone()  # clock order
        self._base = max(float(elapsed) + max(0.0, gap), float(newest[0]) if newest else 0.0)
        self._started = started

    def now(self) -> float:
        return self._base + (self._monotonic() - self._started)

    def save(self, conn: sqlite3.Connection) -> None:
        """Record this reading (in an open write transaction), for the next start."""
        conn.execute("UPDATE clock SET elapsed = ?, wall = ?, boot_id = ?, monotonic = ? WHERE id = 1",
                     (self.now(), self._wall(), self._boot, self._monotonic()))
