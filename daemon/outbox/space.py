"""What the outbox may keep on a full filesystem: the reserve it lends SQLite, and a byte bound learnt there.

The first full disk releases the reserve and learns a byte bound from the space there is: what is stored now,
plus what the free space (the freed reserve included) holds at the file's own payload-per-byte ratio, less the
margin SQLite needs to checkpoint and delete (a WAL up to its checkpoint size). The outbox then keeps as many of
the newest events as that holds and drops the oldest beyond it. If the disk fills again all the same (another
process took the margin), a defect event lowers the bound by what it needs, no more. A picture never lowers it:
it replaces older pictures, or is refused. Once the filesystem has room for the reserve twice over, the reserve
is set aside again and only the configured bounds apply.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

from daemon.outbox.reserve import Reserve
from daemon.outbox.schema import DEFECT

log = logging.getLogger("daemon.outbox")

MARGIN_SLACK = 128 * 1024  # pages a transaction adds to the WAL beyond its checkpoint size


class DiskSpace:
    def __init__(self, database: Path, reserve_bytes: int) -> None:
        self._database = database
        self.reserve = Reserve(database.with_name(database.name + "-reserve"), reserve_bytes)
        self.bound: int | None = None  # payload bytes, learnt from a full filesystem; None: not full
        self.margin = MARGIN_SLACK  # set once the connection is open (`measure_margin`)
        self._lock = threading.Lock()  # the event and snapshot threads both append

    @property
    def full(self) -> bool:
        return self.reserve.released

    def measure_margin(self, conn: sqlite3.Connection) -> None:
        page = int(conn.execute("PRAGMA page_size").fetchone()[0])
        self.margin = int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) * page + MARGIN_SLACK

    def release(self) -> bool:
        """Give the reserve to SQLite on the first full disk. True when this call released it."""
        with self._lock:
            if self.reserve.released:
                return False
            log.error("outbox_disk_full", extra={"path": str(self._database), "reserve_bytes": self.reserve.size,
                                                 "action": "the oldest events give way to the newest"})
            self.reserve.release()
            return True

    def bound_after_full(self, conn: sqlite3.Connection, kind: str, size: int, first: bool) -> int:
        """The byte bound this make-room step enforces (in its transaction), learning it as the module says."""
        stored = int(conn.execute("SELECT bytes FROM totals").fetchone()[0])
        page = int(conn.execute("PRAGMA page_size").fetchone()[0])
        need = stored - 2 * (size + page)  # room in the file for the new row and its index entries
        with self._lock:
            if first:
                self.bound = bound = stored + self._room_for_payload(conn, stored, page)
            elif kind == DEFECT:
                self.bound = bound = min(self.bound or stored, need)
            else:
                bound = need  # a picture makes room among pictures, for itself only
            return bound

    def _room_for_payload(self, conn: sqlite3.Connection, stored: int, page: int) -> int:
        """Payload bytes the filesystem's free space holds, less the margin, at the file's payload ratio."""
        try:
            disk = os.statvfs(self._database.parent)
        except OSError:
            return 0
        used = (int(conn.execute("PRAGMA page_count").fetchone()[0])
                - int(conn.execute("PRAGMA freelist_count").fetchone()[0])) * page
        ratio = min(1.0, max(0.05, stored / used)) if used and stored else 0.5
        return max(0, int((disk.f_bavail * disk.f_frsize - self.margin) * ratio))

    def after_append(self) -> None:
        """Set the reserve aside again once space came back (checked every few seconds); then no learnt bound."""
        with self._lock:
            if self.reserve.released:
                self.reserve.restore()
                if not self.reserve.released:
                    self.bound = None
