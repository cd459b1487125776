"""The outbox's bounds as SQL: dropping the oldest rows of a kind, each drop reported per camera."""

from __future__ import annotations

import logging
import sqlite3

from daemon.outbox.schema import DEFECT
from daemon.outbox.types import DroppedRange, DropReason, DropReport

log = logging.getLogger("daemon.outbox")


def log_drop(report: DropReport) -> None:
    log.warning(
        "outbox_dropped",
        extra={
            "reason": report.reason.value,
            "kind": report.kind,
            "dropped": report.dropped,
            "dropped_bytes": report.dropped_bytes,
            "cameras": {r.camera_id: [r.first_seq, r.last_seq, r.count] for r in report.cameras},
        },
    )


def kind_totals(conn: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    """kind -> (rows, payload bytes), kept by triggers inside every transaction."""
    return {str(k): (int(n), int(b)) for k, n, b in conn.execute("SELECT kind, events, bytes FROM kind_totals")}


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


def drop(conn: sqlite3.Connection, reason: DropReason, kind: str, where: str, param: float) -> DropReport | None:
    # `where` is one of the literals in Outbox._enforce, never caller input. Aggregated here, not with
    # GROUP BY: without ANALYZE stats SQLite serves GROUP BY camera_id from the (camera_id, seq) index, a
    # full scan on every append once a bound is reached. This way it stays a range search.
    per_camera: dict[str, list[int]] = {}  # camera_id -> [first_seq, last_seq, count]
    dropped_bytes = 0
    for camera_id, seq, size in conn.execute(
        f"SELECT camera_id, seq, length(payload) FROM events WHERE kind = ? AND {where}", (kind, param)
    ):
        span = per_camera.setdefault(camera_id, [seq, seq, 0])
        span[0], span[1], span[2] = min(span[0], seq), max(span[1], seq), span[2] + 1
        dropped_bytes += size
    if not per_camera:
        return None
    conn.execute(f"DELETE FROM events WHERE kind = ? AND {where}", (kind, param))
    dropped = sum(span[2] for span in per_camera.values())
    conn.execute(
        "INSERT INTO drop_counters (reason, total) VALUES (?, ?)"
        " ON CONFLICT (reason) DO UPDATE SET total = total + excluded.total",
        (reason.value if kind == DEFECT else f"{kind}:{reason.value}", dropped),
    )
    cameras = tuple(DroppedRange(cam, *per_camera[cam]) for cam in sorted(per_camera))
    return DropReport(reason=reason, dropped=dropped, dropped_bytes=dropped_bytes, cameras=cameras, kind=kind)
