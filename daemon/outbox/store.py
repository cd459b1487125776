"""Durable on-disk outbox for defect events (SQLite in WAL mode).

paho-mqtt keeps un-acked messages in memory only, so a broker outage, a crash or a power cut would lose
them. Every event is committed here *before* it is handed to MQTT and deleted only once the broker's PUBACK
arrived (`ack_many`), an ack grace later. After a restart `pending()` returns whatever is still here (the
acknowledged ones still in their grace included), so delivery is at-least-once: consumers dedupe on
(camera_id, seq).

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

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from daemon.outbox import deadletter
from daemon.outbox.bounds import counter_key, enforce, purge_acked
from daemon.outbox.clock import OutboxClock, boot_id
from daemon.outbox.connection import check_integrity, prepare, rollback_quietly
from daemon.outbox.deliveries import MQTT, OutputSpec, delivered, mark, register, spec_of, unmark, waiting
from daemon.outbox.droplog import DropLog
from daemon.outbox.errors import (
    OutboxError,
    OutboxFullError,
    OutboxRetryableError,
    PayloadTooLargeError,
    translate,
)
from daemon.outbox.schema import DEFECT, EVENT_COLUMNS
from daemon.outbox.space import DiskSpace
from daemon.outbox.stats import read_stats
from daemon.outbox.types import DeadLetter, DropReport, OutboxLimits, OutboxStats, StoredEvent

log = logging.getLogger("daemon.outbox")

SynchronousMode = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
_SYNC_MODES: frozenset[str] = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
_SMALL_ACK = 8  # events deleted per transaction when the disk is full


def _stored(row: tuple[Any, ...]) -> StoredEvent:
    """A StoredEvent from a row of EVENT_COLUMNS."""
    return StoredEvent(row[0], row[1], row[2], row[3], bytes(row[4]), row[5], row[6])


class Outbox:
    """Durable FIFO of events waiting for a broker PUBACK.

    Threading: `append` runs on the event and snapshot threads, `pending`/`ack_many` on the publisher's. All
    share one connection behind one lock, which makes each public method one whole transaction (SQLite
    serialises writers anyway; a connection per thread would trade a cheap lock for busy retries).

    `render(seq)` runs inside the append transaction with the lock held: keep it quick and never call back
    into the Outbox from it (that would deadlock). `on_drop` receives every DropReport after commit, outside
    the lock, to count it; the outbox logs the drops itself (droplog.py).
    """

    def __init__(
        self,
        path: Path,
        limits: OutboxLimits,
        *,
        synchronous: SynchronousMode = "FULL",
        busy_timeout_s: float = 5.0,
        on_drop: Callable[[DropReport], None] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        reserve_bytes: int = 0,
        ack_grace_s: float = 0.0,
        boot: str | None = None,
        outputs: tuple[OutputSpec, ...] = (OutputSpec(MQTT),),
    ) -> None:
        # Checked at runtime too: the value is interpolated into a PRAGMA.
        if synchronous not in _SYNC_MODES:
            raise ValueError(f"synchronous must be one of {sorted(_SYNC_MODES)}, got {synchronous!r}")
        self._path = Path(path)
        self._limits = limits
        self._on_drop = on_drop
        self._ack_grace_s = ack_grace_s
        self._outputs = outputs
        self._drop_log = DropLog()
        self._clock = clock
        self._lock = threading.Lock()
        self._space = DiskSpace(self._path, reserve_bytes)
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(f"cannot create outbox directory {self._path.parent}: {exc}") from exc
        conn: sqlite3.Connection | None = None
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves rather than trust implicit transactions.
            conn = sqlite3.connect(self._path, busy_timeout_s, isolation_level=None, check_same_thread=False)
            prepare(conn, self._path, synchronous=synchronous, busy_timeout_s=busy_timeout_s,
                    reserve_bytes=self._space.reserve.size, max_file_bytes=self._limits.max_file_bytes)
            conn.execute("BEGIN")
            self._outbox_clock = OutboxClock(conn, clock, monotonic, boot_id() if boot is None else boot)
            register(conn, outputs)
            conn.execute("COMMIT")
            self._space.measure_margin(conn)
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, sqlite3.Error):
                raise translate(exc, f"cannot open outbox {self._path}") from exc
            raise
        self._conn: sqlite3.Connection | None = conn
        self._space.reserve.restore()
        self._listeners: list[Callable[[], None]] = []

    def on_commit(self, listener: Callable[[], None]) -> None:
        """Call `listener` after each append has committed (the event is on disk), from the appending thread:
        the publisher is woken by it instead of polling. Keep it quick and non-blocking."""
        self._listeners.append(listener)

    @property
    def disk_full(self) -> bool:  # from a full filesystem until the reserve could be set aside again
        return self._space.full

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
                    rollback_quietly(conn)
                    raise
            except sqlite3.Error as exc:
                raise translate(exc, f"outbox {op} failed ({self._path})") from exc

    def _report(self, reports: list[DropReport]) -> None:
        for report in reports:
            self._drop_log.add(report)
            if self._on_drop is None:
                continue
            try:
                self._on_drop(report)
            except Exception:
                # The drop is committed; raising would make the caller think the append failed and retry it.
                log.exception("outbox_on_drop_failed")

    def flush_drop_log(self) -> None:
        """Write the drop lines that are due (at most one a second per kind and reason); call it now and then."""
        self._drop_log.flush()

    def append(
        self, camera_id: str, event_id: str, render: Callable[[int], bytes], kind: str = DEFECT
    ) -> StoredEvent:
        """Assign the next seq for camera_id, store render(seq), enforce bounds: one transaction.

        The event just stored is never dropped by the bounds it triggers (older ones make room). A payload
        that alone exceeds max_bytes raises PayloadTooLargeError, is not stored and consumes no seq: keeping
        it would break the bound, and dropping it would be a loss the caller never hears of.

        A full filesystem is one more bound (`_make_room`): the oldest events give way to the newest. Only when
        nothing is left to drop does OutboxFullError reach the caller.
        """
        attempt = 0
        size = [0]  # the rendered payload's size, for the room a full disk must make
        while True:
            try:
                stored = self._append_once(camera_id, event_id, render, kind, size)
            except OutboxFullError:
                attempt += 1
                if not self._make_room(attempt, kind, size[0]):
                    raise
                continue
            self._space.after_append()
            return stored

    def _make_room(self, attempt: int, kind: str, size: int) -> bool:
        """One more step to free space after SQLITE_FULL (space.py). False when there is nothing left to try."""
        if attempt > 8:
            return False
        first = self._space.release()
        self._checkpoint()  # with the reserve released, the checkpoint has the pages it needs
        try:
            with self._tx("drop for disk space") as conn:
                clock = self._outbox_clock.now()
                purge_acked(conn, clock - self._ack_grace_s)  # delivered, their grace over: room at no loss
                bound = self._space.bound_after_full(conn, kind, size, first)
                drops = enforce(conn, self._limits, clock, keep_rowid=None, new_kind=kind, disk_bound=bound)
        except OutboxRetryableError:
            return False
        if not drops and not first and attempt > 1:
            return False  # nothing left that this row may replace (a picture only replaces pictures): refused
        self._report(drops)
        self._checkpoint()
        return True

    def _checkpoint(self) -> None:
        # On a full disk this can fail; the next step (dropping) may still find room in the WAL.
        with self._lock, contextlib.suppress(sqlite3.Error):
            if self._conn is not None:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

    def _append_once(self, camera_id: str, event_id: str, render: Callable[[int], bytes], kind: str,
                     size: list[int]) -> StoredEvent:
        bound = self._limits.max_bytes if kind == DEFECT else self._limits.kind_max_bytes.get(kind)
        if bound is None:
            raise OutboxError(f"unknown kind {kind!r}: give it a byte bound in OutboxLimits.kind_max_bytes")
        with self._tx("append") as conn:
            now, clock = self._clock(), self._outbox_clock.now()
            counter = counter_key(camera_id, kind)
            conn.execute(
                "INSERT INTO seq_counters (camera_id, last_seq) VALUES (?, 1)"
                " ON CONFLICT (camera_id) DO UPDATE SET last_seq = last_seq + 1",
                (counter,),
            )
            seq = int(conn.execute("SELECT last_seq FROM seq_counters WHERE camera_id = ?", (counter,)).fetchone()[0])
            payload = render(seq)
            if not isinstance(payload, bytes):
                raise TypeError(f"render must return bytes, got {type(payload).__name__}")
            size[0] = len(payload)
            if len(payload) > bound:
                raise PayloadTooLargeError(
                    f"{kind} {event_id} ({camera_id}) payload is {len(payload)} bytes, over its bound {bound};"
                    " not stored"
                )
            cursor = conn.execute(
                "INSERT INTO events (camera_id, kind, seq, event_id, topic, payload, created_at, created_clock)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (camera_id, kind, seq, event_id, "", payload, now, clock),  # topic: unused since v4
            )
            rowid = cursor.lastrowid
            assert rowid is not None  # always set after a single-row INSERT
            if not mark(conn, rowid, self._outputs, kind):
                delivered(conn, self._ack_grace_s, [rowid], clock)  # no output takes this kind
            drops = enforce(conn, self._limits, clock, keep_rowid=rowid, new_kind=kind, disk_bound=self._space.bound)
        for listener in self._listeners:
            listener()
        self._report(drops)
        return StoredEvent(rowid, camera_id, seq, event_id, payload, now, kind)

    def pending(self, limit: int, after_rowid: int = 0, output: str = MQTT) -> list[StoredEvent]:
        """Up to `limit` events with rowid > after_rowid that wait for `output`, oldest first."""
        if limit <= 0:
            return []
        with self._tx("pending", write=False) as conn:
            ids = waiting(conn, spec_of(self._outputs, output), after_rowid, limit)
            rows = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE id IN ({','.join('?' * len(ids))})"
                                " ORDER BY id", ids).fetchall() if ids else []
        return [_stored(row) for row in rows]

    def get(self, rowids: Iterable[int]) -> list[StoredEvent]:
        """The events still stored among these rowids, in rowid order (an output's retries re-read them)."""
        ids = sorted(set(rowids))
        if not ids:
            return []
        with self._tx("get", write=False) as conn:
            rows = [row for chunk in range(0, len(ids), 500) for row in conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE id IN ({','.join('?' * len(ids[chunk:chunk + 500]))})"
                " ORDER BY id", ids[chunk:chunk + 500])]
        return [_stored(row) for row in rows]

    def ack(self, rowid: int, output: str = MQTT) -> bool:
        """An event the output delivered (see ack_many). False if already gone (dropped, a duplicate ack)."""
        return self.ack_many([rowid], output) == 1

    def ack_many(self, rowids: Iterable[int], output: str = MQTT) -> int:
        """Events the output delivered (MQTT: the broker acknowledged them), in one transaction (one fsync): this
        output's marks go, and a row no output waits for any more is delivered (deliveries.delivered). Returns how many
        still waited for this output.

        On a full disk a write needs free pages too: the WAL is checkpointed and the work done in small
        transactions instead. OutboxFullError after that leaves the rest stored: re-sent after a restart."""
        ids = list(rowids)

        def settle(chunk: list[int]) -> int:
            with self._tx("ack") as conn:
                clock = self._outbox_clock.now()
                done, free = unmark(conn, output, chunk)
                delivered(conn, self._ack_grace_s, free, clock)
                purge_acked(conn, clock - self._ack_grace_s)
                return done

        try:
            return settle(ids)
        except OutboxFullError:
            done = 0
            for start in range(0, len(ids), _SMALL_ACK):
                self._checkpoint()
                done += settle(ids[start : start + _SMALL_ACK])
            return done

    def dead_letter(self, rowid: int, *, output: str, code: int, reason: str, address: str = "") -> bool:
        """Move an event an output refused for good to the dead letters (deadletter.py), with the address it was
        refused at (MQTT: its topic). False if it was gone."""
        with self._tx("dead_letter") as conn:
            moved = deadletter.bury(conn, rowid, output=output, code=code, reason=reason, now=self._clock(),
                                    address=address)
            report = deadletter.trim(conn, self._limits.dead_letter_max_bytes)
        self._report([report] if report else [])
        return moved

    def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
        with self._tx("dead_letters", write=False) as conn:
            return deadletter.listing(conn, limit)

    def requeue_dead_letters(self) -> int:
        """Send every dead letter again (once its cause is fixed): back in the queue, after what waits there."""
        with self._tx("requeue") as conn:
            moved = deadletter.requeue(conn, self._outbox_clock.now(), self._outputs)
        for listener in self._listeners:
            listener()
        return moved

    def enforce_limits(self, now: float | None = None) -> list[DropReport]:
        """Apply all bounds now (`now`: the outbox clock's reading, clock.py). Call it periodically: the age bound
        moves even when nothing is appended. It also records the clock's reading for the next start.

        The reports also go to on_drop."""
        with self._tx("enforce_limits") as conn:
            clock = self._outbox_clock.now() if now is None else now
            purge_acked(conn, clock - self._ack_grace_s)
            drops = enforce(conn, self._limits, clock, keep_rowid=None, disk_bound=self._space.bound)
            self._outbox_clock.save(conn)
        self._report(drops)
        return drops

    def last_seq(self, camera_id: str, kind: str = DEFECT) -> int:
        """The last seq assigned to camera_id's events of this kind (0 if none), acked or not."""
        with self._tx("last_seq", write=False) as conn:
            row = conn.execute("SELECT last_seq FROM seq_counters WHERE camera_id = ?",
                               (counter_key(camera_id, kind),)).fetchone()
        return 0 if row is None else int(row[0])

    def stats(self) -> OutboxStats:
        """Counts, bytes, the oldest waiting event and the drops: index lookups at any depth (stats.py)."""
        with self._tx("stats", write=False) as conn:
            return read_stats(conn, self._outbox_clock.now(), disk_full=self.disk_full)

    def integrity_check(self) -> str:
        """'ok', or the problems: SQLite's check plus ours (totals match rows; no seq above its counter)."""
        with self._tx("integrity_check", write=False) as conn:
            return check_integrity(conn)

    def close(self) -> None:
        """Record the clock, write the drop lines still waiting, close the connection (SQLite checkpoints and
        removes the WAL). Idempotent."""
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):  # a full disk: the next start takes the newest row's clock
                    self._conn.execute("BEGIN IMMEDIATE")
                    self._outbox_clock.save(self._conn)
                    purge_acked(self._conn, float("inf"))  # a clean stop: the broker lives on and saves on its own
                    self._conn.execute("COMMIT")
                rollback_quietly(self._conn)
                self._conn.close()
                self._conn = None
        self._drop_log.flush(everything=True)

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
