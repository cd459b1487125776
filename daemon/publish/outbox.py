"""Durable on-disk outbox for defect events (SQLite in WAL mode).

paho-mqtt keeps un-acked messages in memory only, so a broker outage, a crash or a power cut would lose
them. Every event is committed here *before* it is handed to MQTT and deleted only when the broker's PUBACK
arrives (`ack`). After a restart `pending()` returns whatever is still here, so delivery is at-least-once:
consumers dedupe on (camera_id, seq).

Guarantees:
- With synchronous="FULL" (the default) an event survives a process crash and a power cut once `append`
  has returned (given a disk that honours fsync).
- Per-camera `seq` comes from a persisted counter bumped in the same transaction as the insert: gapless
  over appended events, monotonic across restarts, never reused after acks or drops. A failed `append`
  (render raised, disk full) rolls back and consumes no seq.
- Bounds drop the *oldest* events (insertion order) and are never silent: each drop goes to `on_drop` as
  a DropReport and into a persisted counter. Downstream sees a dropped event as a gap in seq.

All state lives in the file and every write is one IMMEDIATE transaction, so a second connection (a
`doctor` command) is safe; but one daemon must own an outbox, or both would publish every event.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Literal

log = logging.getLogger(__name__)

SynchronousMode = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
_SYNC_MODES: frozenset[str] = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
# "LNWT": marks the file as ours, so a mistyped path to another app's database is refused, not altered.
_APPLICATION_ID = 0x4C4E5754
# After a big drop transaction the WAL would otherwise stay at its high-water size.
_JOURNAL_SIZE_LIMIT = 8 * 1024 * 1024

# _MIGRATIONS[i] takes the schema from user_version i to i + 1. Append, never edit.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # AUTOINCREMENT so an id is never reused: a late or duplicate ack for a dropped row must not
        # delete a newer event, and the publisher's `after_rowid` cursor must never skip one.
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            camera_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            event_id TEXT NOT NULL,
            topic TEXT NOT NULL,
            payload BLOB NOT NULL,
            created_at REAL NOT NULL,
            UNIQUE (camera_id, seq))""",
        "CREATE INDEX events_created_at ON events (created_at)",
        # Not derived from `events`: rows there are deleted on ack and drop, and seq must never go back.
        "CREATE TABLE seq_counters (camera_id TEXT PRIMARY KEY, last_seq INTEGER NOT NULL) WITHOUT ROWID",
        "CREATE TABLE drop_counters (reason TEXT PRIMARY KEY, total INTEGER NOT NULL) WITHOUT ROWID",
        # Running totals kept by triggers inside each transaction: the byte bound costs O(1) per append
        # and stays right after a crash.
        """CREATE TABLE totals (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            events INTEGER NOT NULL, bytes INTEGER NOT NULL)""",
        "INSERT INTO totals VALUES (1, 0, 0)",
        """CREATE TRIGGER events_after_insert AFTER INSERT ON events BEGIN
            UPDATE totals SET events = events + 1, bytes = bytes + length(NEW.payload);
        END""",
        """CREATE TRIGGER events_after_delete AFTER DELETE ON events BEGIN
            UPDATE totals SET events = events - 1, bytes = bytes - length(OLD.payload);
        END""",
        f"PRAGMA application_id = {_APPLICATION_ID}",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

_EVENT_COLUMNS = "id, camera_id, seq, event_id, topic, payload, created_at"


class OutboxError(Exception):
    """Fatal outbox failure: bad file, newer schema, closed, misuse."""


class OutboxRetryableError(OutboxError):
    """The transaction was rolled back; the same call may succeed later (back off, then retry)."""


class OutboxFullError(OutboxRetryableError):
    """Disk full or the max_file_bytes ceiling reached."""


class OutboxCorruptError(OutboxError):
    """The file is not a SQLite database or is damaged."""


class PayloadTooLargeError(OutboxError):
    """One rendered payload alone exceeds max_bytes; it was not stored."""


# SQLite primary result codes (stable C ABI; sqlite3.SQLITE_* only exist from 3.11).
_PRIMARY_CODE_ERRORS: dict[int, type[OutboxError]] = {
    13: OutboxFullError,  # SQLITE_FULL
    5: OutboxRetryableError,  # SQLITE_BUSY: another connection held the write lock past busy_timeout
    6: OutboxRetryableError,  # SQLITE_LOCKED
    10: OutboxRetryableError,  # SQLITE_IOERR: SQLite rolled back; the device may recover
    11: OutboxCorruptError,  # SQLITE_CORRUPT
    26: OutboxCorruptError,  # SQLITE_NOTADB
}
# Python 3.10 has no sqlite_errorcode; fall back to SQLite's fixed messages.
_MESSAGE_ERRORS: tuple[tuple[str, type[OutboxError]], ...] = (
    ("disk is full", OutboxFullError),
    ("database is locked", OutboxRetryableError),
    ("disk i/o error", OutboxRetryableError),
    ("not a database", OutboxCorruptError),
    ("malformed", OutboxCorruptError),
)
_HINTS: dict[type[OutboxError], str] = {
    OutboxFullError: "; nothing was written, retry after freeing space",
    OutboxCorruptError: "; move the file aside (keep it for forensics) and restart to create an empty outbox",
}


def _translate(exc: sqlite3.Error, context: str) -> OutboxError:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        # Extended codes (e.g. SQLITE_IOERR_WRITE) carry the primary code in the low byte.
        cls = _PRIMARY_CODE_ERRORS.get(code & 0xFF, OutboxError)
    else:
        text = str(exc).lower()
        cls = next((c for m, c in _MESSAGE_ERRORS if m in text), OutboxError)
    return cls(f"{context}: {exc}{_HINTS.get(cls, '')}")


@dataclass(frozen=True)
class OutboxLimits:
    """Bounds on what the outbox keeps while the broker is unreachable.

    max_bytes counts payload bytes only; the file is larger (ids, topics, indexes, WAL), and it does not
    shrink: freed pages are reused. max_age_s compares wall-clock created_at with now, so on a host without
    an RTC start only after time sync, or pre-sync events age out at the first NTP step.
    max_events = 0: no count bound. max_file_bytes = 0: no ceiling; otherwise it caps the main database file
    (PRAGMA max_page_count) and appends beyond it raise OutboxFullError instead of filling the disk.
    """

    max_bytes: int
    max_age_s: float
    max_events: int = 0
    max_file_bytes: int = 0

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {self.max_bytes}")
        # > 0 so an event never ages out in the append that stores it.
        if self.max_age_s <= 0:
            raise ValueError(f"max_age_s must be > 0, got {self.max_age_s}")
        if self.max_events < 0 or self.max_file_bytes < 0:
            raise ValueError("max_events and max_file_bytes must be >= 0 (0 = no bound)")


@dataclass(frozen=True)
class StoredEvent:
    rowid: int
    camera_id: str
    seq: int
    event_id: str
    topic: str
    payload: bytes
    created_at: float  # unix time (wall clock) when appended


class DropReason(str, Enum):
    MAX_AGE = "max_age"
    MAX_EVENTS = "max_events"
    MAX_BYTES = "max_bytes"


@dataclass(frozen=True)
class DroppedRange:
    """One camera's share of a drop. Acked events in between are not counted, so `count` can be less than
    last_seq - first_seq + 1."""

    camera_id: str
    first_seq: int
    last_seq: int
    count: int


@dataclass(frozen=True)
class DropReport:
    reason: DropReason
    dropped: int
    dropped_bytes: int
    cameras: tuple[DroppedRange, ...]


@dataclass(frozen=True)
class OutboxStats:
    pending_events: int
    pending_bytes: int
    oldest_created_at: float | None
    oldest_age_s: float | None
    dropped_total: int  # persisted across restarts
    dropped_by_reason: Mapping[str, int] = field(default_factory=dict)


def _log_drop(report: DropReport) -> None:
    log.warning(
        "outbox_dropped",
        extra={
            "reason": report.reason.value,
            "dropped": report.dropped,
            "dropped_bytes": report.dropped_bytes,
            "cameras": {r.camera_id: [r.first_seq, r.last_seq, r.count] for r in report.cameras},
        },
    )


class Outbox:
    """Durable FIFO of events waiting for a broker PUBACK.

    Threading: `append` runs on the event-builder thread, `pending`/`ack` on the publisher and paho network
    threads. All share one connection (check_same_thread=False) behind one lock. A connection per thread
    would buy nothing: SQLite serialises writers anyway, so they would contend on the file lock with busy
    retries instead of a cheap in-process lock, and every operation here is a millisecond-scale
    transaction. The lock also makes each public method one whole transaction, which the connection's
    shared transaction state would not if threads interleaved statements.

    `render(seq)` runs inside the append transaction with the lock held: keep it quick and never call back
    into the Outbox from it (that would deadlock).

    `on_drop` receives every DropReport, from `append` and `enforce_limits` alike, after commit and outside
    the lock (default: a warning on this module's logger). `enforce_limits` also returns its reports: log
    them in one place only.
    """

    def __init__(
        self,
        path: Path,
        limits: OutboxLimits,
        *,
        synchronous: SynchronousMode = "FULL",
        busy_timeout_s: float = 5.0,
        on_drop: Callable[[DropReport], None] | None = _log_drop,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Checked at runtime too: the value is interpolated into a PRAGMA.
        if synchronous not in _SYNC_MODES:
            raise ValueError(f"synchronous must be one of {sorted(_SYNC_MODES)}, got {synchronous!r}")
        self._path = Path(path)
        self._limits = limits
        self._on_drop = on_drop
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(f"cannot create outbox directory {self._path.parent}: {exc}") from exc
        conn: sqlite3.Connection | None = None
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves rather than trust implicit transactions.
            conn = sqlite3.connect(self._path, busy_timeout_s, isolation_level=None, check_same_thread=False)
            self._setup(conn, synchronous, busy_timeout_s)
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, sqlite3.Error):
                raise _translate(exc, f"cannot open outbox {self._path}") from exc
            raise
        self._conn: sqlite3.Connection | None = conn

    def _setup(self, conn: sqlite3.Connection, synchronous: str, busy_timeout_s: float) -> None:
        # Outside a transaction, as journal_mode requires; also the first read, so a non-database fails here.
        mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        if mode.lower() != "wal":
            raise OutboxError(f"outbox {self._path}: journal_mode is {mode!r}, need WAL (not on a network FS)")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        conn.execute(f"PRAGMA journal_size_limit={_JOURNAL_SIZE_LIMIT}")
        if self._limits.max_file_bytes:
            page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            pages = max(1, self._limits.max_file_bytes // page_size)
            conn.execute(f"PRAGMA max_page_count={pages}")
        # Version read inside BEGIN IMMEDIATE so two processes starting at once cannot both migrate.
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise OutboxError(
                    f"outbox {self._path} has schema v{version}, newer than this linewatch"
                    f" (v{SCHEMA_VERSION}); refusing to downgrade it"
                )
            has_tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
            if (version == 0 and has_tables) or (version > 0 and app_id != _APPLICATION_ID):
                raise OutboxError(f"{self._path} is an SQLite database but not a linewatch outbox")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target - 1]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={target}")
            conn.execute("COMMIT")
        except BaseException:
            _rollback_quietly(conn)
            raise

    @contextmanager
    def _tx(self, op: str, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """Lock + one transaction; commit on success, roll back on any error.

        IMMEDIATE for writes so the write lock is held before the seq is read; a read transaction still
        gives stats() one consistent snapshot.
        """
        with self._lock:
            conn = self._conn
            if conn is None:
                raise OutboxError(f"outbox {self._path} is closed ({op})")
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback_quietly(conn)
                    raise
            except sqlite3.Error as exc:
                raise _translate(exc, f"outbox {op} failed ({self._path})") from exc

    def _report(self, reports: list[DropReport]) -> None:
        if self._on_drop is None:
            return
        for report in reports:
            try:
                self._on_drop(report)
            except Exception:
                # The drop is committed; raising would make the caller think the append failed and retry it.
                log.exception("outbox_on_drop_failed")

    def append(self, camera_id: str, event_id: str, topic: str, render: Callable[[int], bytes]) -> StoredEvent:
        """Assign the next seq for camera_id, store render(seq), enforce bounds: one transaction.

        The event just stored is never dropped by the bounds it triggers (older ones make room). A payload
        that alone exceeds max_bytes raises PayloadTooLargeError, is not stored and consumes no seq: keeping
        it would break the bound, and dropping it would be a loss the caller never hears of.
        """
        with self._tx("append") as conn:
            now = self._clock()
            conn.execute(
                "INSERT INTO seq_counters (camera_id, last_seq) VALUES (?, 1)"
                " ON CONFLICT (camera_id) DO UPDATE SET last_seq = last_seq + 1",
                (camera_id,),
            )
            seq = int(conn.execute("SELECT last_seq FROM seq_counters WHERE camera_id = ?", (camera_id,)).fetchone()[0])
            payload = render(seq)
            if not isinstance(payload, bytes):
                raise TypeError(f"render must return bytes, got {type(payload).__name__}")
            if len(payload) > self._limits.max_bytes:
                raise PayloadTooLargeError(
                    f"event {event_id} ({camera_id}) payload is {len(payload)} bytes,"
                    f" over max_bytes={self._limits.max_bytes}; not stored"
                )
            cursor = conn.execute(
                "INSERT INTO events (camera_id, seq, event_id, topic, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (camera_id, seq, event_id, topic, payload, now),
            )
            rowid = cursor.lastrowid
            assert rowid is not None  # always set after a single-row INSERT
            drops = self._enforce(conn, now, keep_rowid=rowid)
        self._report(drops)
        return StoredEvent(rowid, camera_id, seq, event_id, topic, payload, now)

    def pending(self, limit: int, after_rowid: int = 0) -> list[StoredEvent]:
        """Up to `limit` stored events with rowid > after_rowid, oldest first."""
        if limit <= 0:
            return []
        with self._tx("pending", write=False) as conn:
            rows = conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE id > ? ORDER BY id LIMIT ?", (after_rowid, limit)
            ).fetchall()
        return [StoredEvent(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[6]) for r in rows]

    def ack(self, rowid: int) -> bool:
        """Delete an event the broker acknowledged. False if already gone (dropped, or a duplicate ack)."""
        with self._tx("ack") as conn:
            return conn.execute("DELETE FROM events WHERE id = ?", (rowid,)).rowcount == 1

    def ack_many(self, rowids: Iterable[int]) -> int:
        """Delete acked events in one transaction (one fsync); returns how many were still there."""
        with self._tx("ack") as conn:
            return sum(conn.execute("DELETE FROM events WHERE id = ?", (rowid,)).rowcount for rowid in rowids)

    def enforce_limits(self, now: float | None = None) -> list[DropReport]:
        """Apply all bounds now. Call it periodically: the age bound moves even when nothing is appended.

        The reports also go to on_drop."""
        with self._tx("enforce_limits") as conn:
            drops = self._enforce(conn, self._clock() if now is None else now, keep_rowid=None)
        self._report(drops)
        return drops

    def last_seq(self, camera_id: str) -> int:
        """The last seq assigned to camera_id (0 if none), acked or not."""
        with self._tx("last_seq", write=False) as conn:
            row = conn.execute("SELECT last_seq FROM seq_counters WHERE camera_id = ?", (camera_id,)).fetchone()
        return 0 if row is None else int(row[0])

    def stats(self) -> OutboxStats:
        with self._tx("stats", write=False) as conn:
            count, nbytes = conn.execute("SELECT events, bytes FROM totals").fetchone()
            oldest = conn.execute("SELECT min(created_at) FROM events").fetchone()[0]
            by_reason = {
                str(reason): int(total) for reason, total in conn.execute("SELECT reason, total FROM drop_counters")
            }
        now = self._clock()
        return OutboxStats(
            pending_events=int(count),
            pending_bytes=int(nbytes),
            oldest_created_at=oldest,
            oldest_age_s=None if oldest is None else max(0.0, now - oldest),
            dropped_total=sum(by_reason.values()),
            dropped_by_reason=by_reason,
        )

    def integrity_check(self) -> str:
        """'ok', or the problems: SQLite's check plus ours (totals match rows; no seq above its counter)."""
        with self._tx("integrity_check", write=False) as conn:
            problems = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
            if problems == ["ok"]:
                problems = []
            kept = conn.execute("SELECT events, bytes FROM totals").fetchone()
            actual = conn.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM events").fetchone()
            if tuple(kept) != tuple(actual):
                problems.append(f"totals {tuple(kept)} != actual {tuple(actual)}")
            ahead = conn.execute(
                "SELECT count(*) FROM events e LEFT JOIN seq_counters c USING (camera_id)"
                " WHERE c.last_seq IS NULL OR e.seq > c.last_seq"
            ).fetchone()[0]
            if ahead:
                problems.append(f"{ahead} events have seq above their camera's counter")
        return "\n".join(problems) or "ok"

    def close(self) -> None:
        """Close the connection (SQLite checkpoints and removes the WAL). Idempotent."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _enforce(self, conn: sqlite3.Connection, now: float, *, keep_rowid: int | None) -> list[DropReport]:
        """Age first (cheap, and it may satisfy the rest), then count, then bytes.

        Count and bytes drop a prefix in insertion order, not by created_at, so a wall-clock step cannot
        reorder what goes first. keep_rowid is the newest row, so stopping before it keeps it.
        """
        limits = self._limits
        reports: list[DropReport] = []
        report = _drop(conn, DropReason.MAX_AGE, "created_at < ?", now - limits.max_age_s)
        if report:
            reports.append(report)
        count, total = conn.execute("SELECT events, bytes FROM totals").fetchone()
        if limits.max_events and count > limits.max_events:
            last_id = conn.execute(
                "SELECT id FROM events ORDER BY id LIMIT 1 OFFSET ?", (count - limits.max_events - 1,)
            ).fetchone()[0]
            report = _drop(conn, DropReason.MAX_EVENTS, "id <= ?", last_id)
            if report:
                reports.append(report)
                total -= report.dropped_bytes
        if total > limits.max_bytes:
            excess, freed, last_id = total - limits.max_bytes, 0, None
            cursor = conn.execute("SELECT id, length(payload) FROM events ORDER BY id")
            for rowid, size in cursor:
                if rowid == keep_rowid or freed >= excess:
                    break
                freed += size
                last_id = rowid
            cursor.close()
            if last_id is not None:
                report = _drop(conn, DropReason.MAX_BYTES, "id <= ?", last_id)
                if report:
                    reports.append(report)
        return reports


def _drop(conn: sqlite3.Connection, reason: DropReason, where: str, param: float) -> DropReport | None:
    # `where` is one of the literals in Outbox._enforce, never caller input. Aggregated here, not with
    # GROUP BY: without ANALYZE stats SQLite serves GROUP BY camera_id from the (camera_id, seq) index, a
    # full scan on every append once a bound is reached. This way it stays a range search.
    per_camera: dict[str, list[int]] = {}  # camera_id -> [first_seq, last_seq, count]
    dropped_bytes = 0
    for camera_id, seq, size in conn.execute(
        f"SELECT camera_id, seq, length(payload) FROM events WHERE {where}", (param,)
    ):
        span = per_camera.setdefault(camera_id, [seq, seq, 0])
        span[0], span[1], span[2] = min(span[0], seq), max(span[1], seq), span[2] + 1
        dropped_bytes += size
    if not per_camera:
        return None
    conn.execute(f"DELETE FROM events WHERE {where}", (param,))
    dropped = sum(span[2] for span in per_camera.values())
    conn.execute(
        "INSERT INTO drop_counters (reason, total) VALUES (?, ?)"
        " ON CONFLICT (reason) DO UPDATE SET total = total + excluded.total",
        (reason.value, dropped),
    )
    cameras = tuple(DroppedRange(cam, *per_camera[cam]) for cam in sorted(per_camera))
    return DropReport(reason=reason, dropped=dropped, dropped_bytes=dropped_bytes, cameras=cameras)


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    # After SQLITE_FULL/IOERR SQLite may have rolled back already; a failing ROLLBACK must not hide the
    # error that got us here.
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("outbox_rollback_failed")
