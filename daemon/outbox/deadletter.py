"""Dead letters: events an output refused for good, moved aside instead of deleted.

MQTT 5 names the refusals that no retry can cure (not authorised, topic name invalid, packet too large, payload
format invalid). Deleting such an event would lose a defect without a trace; keeping it in the queue would block
it for ever. It moves to `dead_letters` with the output, the code and the reason: kept for an operator (and
`linewatch dead-letters` to list or send again once the cause is fixed), bounded by bytes (the oldest go,
counted like every drop), counted, and shown in /metrics and the status.
"""

from __future__ import annotations

import sqlite3

from daemon.outbox.bounds import drop_counter, ranges
from daemon.outbox.deliveries import OutputSpec, mark, unmark
from daemon.outbox.types import DeadLetter, DropReason, DropReport

DEAD = "dead_letter"  # the drop counters' kind for dead letters trimmed by their bound


def bury(conn: sqlite3.Connection, rowid: int, *, output: str, code: int, reason: str, now: float,
         address: str = "") -> bool:
    """Move one event to the dead letters (in the caller's transaction), with the address the output refused it at.
    False if it was gone already."""
    moved = conn.execute(
        "INSERT OR IGNORE INTO dead_letters (id, camera_id, kind, seq, event_id, topic, payload, created_at, dead_at,"
        " output, code, reason) SELECT id, camera_id, kind, seq, event_id, ?, payload, created_at, ?, ?, ?, ?"
        " FROM events WHERE id = ?", (address, now, output, code, reason, rowid)).rowcount
    _, free = unmark(conn, output, [rowid])
    if free:  # no other output waits for it: the dead letter is its only copy
        conn.execute("DELETE FROM events WHERE id = ?", (rowid,))
    return moved == 1


def totals(conn: sqlite3.Connection) -> tuple[int, int]:
    """(dead letters, their payload bytes), kept by triggers: O(1)."""
    count, size = conn.execute("SELECT events, bytes FROM dead_totals").fetchone()
    return int(count), int(size)


def trim(conn: sqlite3.Connection, max_bytes: int) -> DropReport | None:
    """Drop the oldest dead letters beyond `max_bytes`, reported and counted like every drop."""
    excess = totals(conn)[1] - max_bytes
    if excess <= 0:
        return None
    gone: list[tuple[str, int]] = []
    freed, last_id = 0, 0
    cursor = conn.execute("SELECT id, camera_id, seq, length(payload) FROM dead_letters ORDER BY id")
    for rowid, camera_id, seq, size in cursor:  # the oldest first, until enough bytes are freed
        if freed >= excess:
            break
        gone.append((camera_id, seq))
        freed += size
        last_id = rowid
    cursor.close()
    conn.execute("DELETE FROM dead_letters WHERE id <= ?", (last_id,))
    drop_counter(conn, DEAD, DropReason.MAX_BYTES, len(gone))
    return DropReport(reason=DropReason.MAX_BYTES, dropped=len(gone), dropped_bytes=freed, cameras=ranges(gone),
                      kind=DEAD)


def listing(conn: sqlite3.Connection, limit: int) -> list[DeadLetter]:
    rows = conn.execute("SELECT id, camera_id, kind, seq, event_id, topic, length(payload), created_at, dead_at,"
                        " output, code, reason FROM dead_letters ORDER BY id LIMIT ?", (limit,)).fetchall()
    return [DeadLetter(*row) for row in rows]


def requeue(conn: sqlite3.Connection, clock: float, outputs: tuple[OutputSpec, ...]) -> int:
    """Put the dead letters back in the queue for the output that refused them (every output that takes the kind, if
    that one is gone), after what waits there now: new ids; seq and payload kept. A dead letter whose row still waits
    for another output stays until that output has it (a row's seq is stored once)."""
    names = {spec.name: spec for spec in outputs}
    moved = 0
    for old_id, output, kind in conn.execute(
            "SELECT id, output, kind FROM dead_letters d WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = d.id)"
            " ORDER BY id").fetchall():
        rowid = conn.execute(
            "INSERT INTO events (camera_id, kind, seq, event_id, topic, payload, created_at, created_clock)"
            " SELECT camera_id, kind, seq, event_id, '', payload, created_at, ? FROM dead_letters WHERE id = ?",
            (clock, old_id)).lastrowid
        assert rowid is not None
        if not mark(conn, rowid, (names[output],) if output in names else outputs, kind):
            conn.execute("UPDATE events SET acked_clock = ? WHERE id = ?", (clock, rowid))  # nobody takes it now
        conn.execute("DELETE FROM dead_letters WHERE id = ?", (old_id,))
        moved += 1
    return moved
