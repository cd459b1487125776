"""Disk space set aside beside the outbox database, lent to SQLite when the filesystem is full."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger("daemon.outbox")

_MIN_FREE = 1024 * 1024  # without a reserve, the disk counts as full until this much is free again


class Reserve:
    """Disk space set aside beside the database, given back when the filesystem fills up.

    On a full disk SQLite can do nothing, not even the checkpoint or the DELETE that would make room: both
    need a few pages. Releasing the reserve lends them. It is set aside again once the filesystem has room
    for it twice over, which is when the outbox leaves its disk-full state.
    """

    _RECHECK_S = 5.0

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = max(0, size)
        self.released = False
        self._next_check = 0.0

    def release(self) -> None:
        self.released = True
        self._next_check = time.monotonic() + self._RECHECK_S
        self.path.unlink(missing_ok=True)

    def restore(self) -> None:
        """Set the reserve aside if the filesystem has room for it twice over (checked every few seconds)."""
        need = 2 * self.size if self.size else _MIN_FREE
        if not self.size:  # no reserve: leave the disk-full state once the filesystem has a little room again
            try:
                stat = os.statvfs(self.path.parent)
                self.released = stat.f_bavail * stat.f_frsize < need
            except OSError:
                pass
            return
        if self.path.exists() and self.path.stat().st_size >= self.size:
            self.released = False
            return
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self._RECHECK_S
        try:
            stat = os.statvfs(self.path.parent)
            if stat.f_bavail * stat.f_frsize < need:
                raise OSError("not enough free space")
            with self.path.open("wb") as reserve:
                os.posix_fallocate(reserve.fileno(), 0, self.size)
        except OSError:
            self.path.unlink(missing_ok=True)
            self.released = True
            return
        if self.released:
            log.warning("outbox_disk_ok", extra={"path": str(self.path.parent), "reserve_bytes": self.size})
        self.released = False
