"""Opening the outbox's SQLite file: WAL, durability and bound pragmas, the schema's migrations in one
IMMEDIATE transaction (two processes starting at once cannot both migrate), and a rollback that never hides
the error that caused it."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from daemon.outbox.errors import OutboxError
from daemon.outbox.schema import APPLICATION_ID, JOURNAL_SIZE_LIMIT, MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger("daemon.outbox")


def prepare(conn: sqlite3.Connection, path: Path, *, synchronous: str, busy_timeout_s: float, reserve_bytes: int,
            max_file_bytes: int) -> None:
    """Set a fresh connection up (WAL, durability, bounds) and bring the file's schema to this version."""
    # Outside a transaction, as journal_mode requires; also the first read, so a non-database fails here.
    mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
    if mode.lower() != "wal":
        raise OutboxError(f"outbox {path}: journal_mode is {mode!r}, need WAL (not on a network FS)")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
    if reserve_bytes:
        # The WAL is checkpointed before it outgrows a quarter of the reserve (one transaction adds a few pages
        # past that), so on a full disk, with the reserve released, the checkpoint always has room.
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        conn.execute(f"PRAGMA wal_autocheckpoint={max(4, min(1000, reserve_bytes // 4 // page_size))}")
    if max_file_bytes:
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        pages = max(1, max_file_bytes // page_size)
        conn.execute(f"PRAGMA max_page_count={pages}")
    # Version read inside BEGIN IMMEDIATE so two processes starting at once cannot both migrate.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise OutboxError(
                f"outbox {path} has schema v{version}, newer than this linewatch"
                f" (v{SCHEMA_VERSION}); refusing to downgrade it"
            )
        has_tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
        if (version == 0 and has_tables) or (version > 0 and app_id != APPLICATION_ID):
            raise OutboxError(f"{path} is an SQLite database but not a linewatch outbox")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target - 1]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={target}")
        conn.execute("COMMIT")
    except BaseException:
        rollback_quietly(conn)
        raise


def rollback_quietly(conn: sqlite3.Connection) -> None:
    # After SQLITE_FULL/IOERR SQLite may have rolled back already; a failing ROLLBACK must not hide the
    # error that got us here.
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("outbox_rollback_failed")


def check_integrity(conn: sqlite3.Connection) -> str:
    """'ok', or the problems: SQLite's check plus ours (totals match rows, dead letters' totals too; no seq above
    its counter). In the caller's read transaction."""
    problems = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    if problems == ["ok"]:
        problems = []
    for totals, table in (("totals", "events"), ("dead_totals", "dead_letters")):
        kept = conn.execute(f"SELECT events, bytes FROM {totals}").fetchone()
        actual = conn.execute(f"SELECT count(*), coalesce(sum(length(payload)), 0) FROM {table}").fetchone()
        if tuple(kept) != tuple(actual):
            problems.append(f"{totals} {tuple(kept)} != actual {tuple(actual)}")
    ahead = conn.execute(
        "SELECT count(*) FROM events e LEFT JOIN seq_counters c"
        " ON c.camera_id = CASE e.kind WHEN 'defect' THEN e.camera_id"
        " ELSE e.camera_id || char(31) || e.kind END"
        " WHERE c.last_seq IS NULL OR e.seq > c.last_seq"
    ).fetchone()[0]
    if ahead:
        problems.append(f"{ahead} events have seq above their camera's counter")
    orphans = conn.execute("SELECT count(*) FROM events WHERE acked_clock IS NULL AND NOT EXISTS "
                           "(SELECT 1 FROM deliveries d WHERE d.id = events.id)").fetchone()[0]
    if orphans:
        problems.append(f"{orphans} events wait for no output")
    return "\n".join(problems) or "ok"
