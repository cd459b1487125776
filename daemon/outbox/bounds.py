"""The outbox's bounds as SQL: dropping the oldest rows of a kind, each drop reported per camera."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from daemon.outbox.errors import OutboxFullError
from daemon.outbox.schema import DEFECT
from daemon.outbox.types import DroppedRange, DropReason, DropReport, OutboxLimits


def kind_totals(conn: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    """kind -> (rows, payload bytes), kept by triggers inside every transaction."""
    return {str(k): (int(n), int(b)) for k, n, b in conn.execute("SELECT kind, events, bytes FROM kind_totals")}


def acked_totals(conn: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    """kind -> (rows, payload bytes) of the rows the broker acknowledged, kept for their ack grace (few; a partial
    index finds them)."""
    return {str(k): (int(n), int(b)) for k, n, b in conn.execute(
        "SELECT kind, count(*), coalesce(sum(length(payload)), 0) FROM events WHERE acked_clock IS NOT NULL "
        "GROUP BY kind")}


def purge_acked(conn: sqlite3.Connection, before: float) -> None:
    """Delete the acknowledged rows whose ack grace is over (acked at or before `before`, outbox clock)."""
    conn.execute("DELETE FROM events WHERE acked_clock IS NOT NULL AND acked_clock <= ?", (before,))


def counter_key(camera_id: str, kind: str) -> str:
    """The seq_counters key: defect events keep the camera id (schema v1's key), other kinds their own."""
    return camera_id if kind == DEFECT else f"{camera_id}\x1f{kind}"


def trim(conn: sqlite3.Connection, kind: str, excess: int, reason: DropReason, keep_rowid: int | None
          ) -> DropReport | None:
    """Drop the oldest rows of one kind until `excess` payload bytes are gone (never keep_rowid)."""
    if excess <= 0:
        return None
    freed, last_id = 0, None
    cursor = conn.execute("SELECT id, length(payload) FROM events WHERE kind = ? ORDER BY id", (kind,))
    for rowid, size in cursor:
        if rowid == keep_rowid or freed >= excess:
            break
        freed += size
        last_id = rowid
    cursor.close()
    return None if last_id is None else drop(conn, reason, kind, "id <= ?", last_id)


def aged(conn: sqlite3.Connection, kind: str, cutoff: float) -> DropReport | None:
    """Drop the rows of a kind created before `cutoff` (outbox clock). Rows are in clock order, so this walks the
    oldest through the (kind, id) index and stops at the first young one: O(dropped), not O(stored)."""
    last_id = None
    cursor = conn.execute("SELECT id, created_clock FROM events WHERE kind = ? ORDER BY id", (kind,))
    for rowid, created in cursor:
        if created >= cutoff:
            break
        last_id = rowid
    cursor.close()
    return None if last_id is None else drop(conn, DropReason.MAX_AGE, kind, "id <= ?", last_id)


def drop_counter(conn: sqlite3.Connection, kind: str, reason: DropReason, dropped: int) -> None:
    """Add to the persisted drop counter: defect events by reason alone (schema v1's key), others `kind:reason`."""
    conn.execute(
        "INSERT INTO drop_counters (reason, total) VALUES (?, ?)"
        " ON CONFLICT (reason) DO UPDATE SET total = total + excluded.total",
        (reason.value if kind == DEFECT else f"{kind}:{reason.value}", dropped),
    )


def drop(conn: sqlite3.Connection, reason: DropReason, kind: str, where: str, param: float) -> DropReport | None:
    # `where` is one of the literals in enforce() below, never caller input. Aggregated here, not with
    # GROUP BY: without ANALYZE stats SQLite serves GROUP BY camera_id from the (camera_id, seq) index, a
    # full scan on every append once a bound is reached. This way it stays a range search.
    #
    # A row the broker acknowledged (its ack grace running, store.py) goes with the others but is no loss: it is
    # left out of the report's count and ranges, and only its bytes are in dropped_bytes (the room it frees).
    rows = conn.execute(f"SELECT camera_id, seq, length(payload), acked_clock IS NULL FROM events WHERE kind = ? "
                        f"AND {where}", (kind, param)).fetchall()
    if not rows:
        return None
    conn.execute(f"DELETE FROM events WHERE kind = ? AND {where}", (kind, param))
    cameras = ranges((camera_id, seq) for camera_id, seq, _, unacked in rows if unacked)
    dropped = sum(span.count for span in cameras)
    if dropped:
        drop_counter(conn, kind, reason, dropped)
    return DropReport(reason=reason, dropped=dropped, dropped_bytes=sum(row[2] for row in rows), cameras=cameras,
                      kind=kind)


def ranges(rows: Iterable[tuple[str, int]]) -> tuple[DroppedRange, ...]:
    """Per camera, the first and last seq of these (camera, seq) rows and how many, in camera order."""
    spans: dict[str, list[int]] = {}
    for camera_id, seq in rows:
        span = spans.setdefault(camera_id, [seq, seq, 0])
        span[0], span[1], span[2] = min(span[0], seq), max(span[1], seq), span[2] + 1
    return tuple(DroppedRange(camera, *spans[camera]) for camera in sorted(spans))


def enforce(conn: sqlite3.Connection, limits: OutboxLimits, now: float, *, keep_rowid: int | None,
            new_kind: str = DEFECT, disk_bound: int | None = None) -> list[DropReport]:
    """Age first (cheap, and it may satisfy the rest; `now` is the outbox clock), then each kind's own byte bound,
    then the defect events' count and byte bounds, then the disk-full bound (`disk_bound`, learnt from a full
    filesystem) over everything, other kinds first.

    Count and bytes drop a prefix in insertion order, not by created_at, so a wall-clock step cannot
    reorder what goes first. keep_rowid is the newest row, so stopping before it keeps it.
    """
    reports: list[DropReport] = []

    def add(report: DropReport | None) -> None:
        if report is not None and report.dropped:  # only acknowledged rows went: no loss to report
            reports.append(report)

    others = list(limits.kind_max_bytes)
    for kind in (DEFECT, *others):
        add(aged(conn, kind, now - limits.max_age_s))
    totals = kind_totals(conn)
    for kind in others:
        add(trim(conn, kind, totals.get(kind, (0, 0))[1] - limits.kind_max_bytes[kind], DropReason.MAX_BYTES,
                  keep_rowid))
    count, total = totals.get(DEFECT, (0, 0))
    count -= acked_totals(conn).get(DEFECT, (0, 0))[0]  # delivered already: not waiting
    if limits.max_events and count > limits.max_events:
        last_id = conn.execute(
            "SELECT id FROM events WHERE kind = ? AND acked_clock IS NULL ORDER BY id LIMIT 1 OFFSET ?",
            (DEFECT, count - limits.max_events - 1),
        ).fetchone()[0]
        report = drop(conn, DropReason.MAX_EVENTS, DEFECT, "id <= ?", last_id)
        add(report)
        total -= report.dropped_bytes if report else 0
    add(trim(conn, DEFECT, total - limits.max_bytes, DropReason.MAX_BYTES, keep_rowid))
    if disk_bound is not None:
        excess = int(conn.execute("SELECT bytes FROM totals").fetchone()[0]) - disk_bound
        # Pictures give way before any defect event does, and a picture never makes a defect event give way:
        # one that does not fit after the other pictures went is refused (the transaction rolls back).
        for kind in (*others, DEFECT) if new_kind == DEFECT else others:
            report = trim(conn, kind, excess, DropReason.DISK_FULL, keep_rowid)
            add(report)
            excess -= report.dropped_bytes if report else 0
        if excess > 0 and new_kind != DEFECT and keep_rowid is not None:
            raise OutboxFullError(f"no room for a {new_kind} on a full disk without dropping defect events")
    return reports
