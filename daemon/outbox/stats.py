"""The outbox's figures (`Outbox.stats`, read on every /metrics scrape and stats message): counts and bytes from
the triggers' totals, the oldest waiting defect event through the (kind, id) index, and the drops per reason. Index
lookups and one-row-per-kind tables only: a scrape a second must not scan 200,000 rows under the outbox's lock
(tests/outbox/test_outbox.py asks SQLite's own plan for each query)."""

from __future__ import annotations

import sqlite3

from daemon.outbox import deadletter
from daemon.outbox.bounds import acked_totals, kind_totals
from daemon.outbox.schema import DEFECT
from daemon.outbox.types import OutboxStats

OLDEST_WAITING = ("SELECT created_at, created_clock FROM events WHERE kind = ? AND acked_clock IS NULL "
                  "ORDER BY id LIMIT 1")
DROPS = "SELECT reason, total FROM drop_counters"


def read_stats(conn: sqlite3.Connection, clock_now: float, *, disk_full: bool) -> OutboxStats:
    """In the caller's read transaction; `clock_now` is the outbox clock's now (for the oldest event's age)."""
    acked = acked_totals(conn)  # delivered, kept for their ack grace: not waiting
    kinds = {kind: (count - acked.get(kind, (0, 0))[0], size - acked.get(kind, (0, 0))[1])
             for kind, (count, size) in kind_totals(conn).items()}
    oldest = conn.execute(OLDEST_WAITING, (DEFECT,)).fetchone()
    by_reason = {  # defect drops only: the seq gaps a subscriber sees; other kinds are keyed kind:reason
        str(reason): int(total) for reason, total in conn.execute(DROPS) if ":" not in str(reason)
    }
    dead, dead_bytes = deadletter.totals(conn)
    count, nbytes = kinds.pop(DEFECT, (0, 0))
    return OutboxStats(
        pending_events=count,
        pending_bytes=nbytes,
        oldest_created_at=None if oldest is None else float(oldest[0]),
        oldest_age_s=None if oldest is None else max(0.0, clock_now - float(oldest[1])),
        dropped_total=sum(by_reason.values()),
        dropped_by_reason=by_reason,
        disk_full=disk_full,
        other_kinds={kind: totals for kind, totals in kinds.items() if totals[0]},
        dead_letters=dead,
        dead_letter_bytes=dead_bytes,
    )
