"""The outbox on a filesystem that really fills up: a 400 KB tmpfs, as a filler file leaves of a 1 MB tmpfs.

Mounting the tmpfs needs root (tests/support/disk.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.outbox import DropReason, DropReport, Outbox, OutboxLimits
from tests.support.disk import small_tmpfs


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "small-disk", "1m") as mount:
        yield mount


@pytest.mark.slow
def test_a_full_disk_drops_the_oldest_events_for_the_newest_and_recovers_when_space_returns(
    small_disk: Path,
) -> None:
    # Given a 1 MB disk that something else (a log file, say) has mostly filled
    filler = small_disk / "someone-elses.log"
    filler.write_bytes(b"\0" * 600 * 1024)
    reports: list[DropReport] = []
    limits = OutboxLimits(max_bytes=256 * 1024 * 1024, max_age_s=3600)
    with Outbox(small_disk / "outbox.sqlite3", limits, reserve_bytes=96 * 1024, on_drop=reports.append) as outbox:
        # When 3,000 events of 900 bytes (2.7 MB) meet what is left, with no broker to take them
        for index in range(3000):
            stored = outbox.append("cam", f"e{index}", lambda seq: b"x" * 900)
        # Then every append succeeded (the landed code stored a dozen and then failed every append)
        assert stored.seq == 3000
        assert outbox.stats().disk_full
        # and every event is either still stored or reported dropped; the stored ones are the newest, gapless
        stats = outbox.stats()
        assert sum(r.dropped for r in reports) + stats.pending_events == 3000
        assert {r.reason for r in reports} == {DropReason.DISK_FULL}
        kept = [e.seq for e in outbox.pending(5000)]
        assert kept == list(range(3001 - len(kept), 3001)) and len(kept) > 12
        # When the other file goes, the outbox sets its reserve aside again and leaves the disk-full state
        filler.unlink()
        deadline = time.monotonic() + 20.0  # it looks again every few seconds, on an append
        while outbox.disk_full and time.monotonic() < deadline:
            outbox.append("cam", "after", lambda seq: b"x" * 900)
            time.sleep(0.05)  # the pace of a camera's events; the deadline above is what bounds the wait
        assert not outbox.disk_full
        # Then the configured bounds alone apply again: nothing more is dropped for disk space
        dropped = sum(r.dropped for r in reports)
        for index in range(100):
            outbox.append("cam", f"later{index}", lambda seq: b"x" * 900)
        assert sum(r.dropped for r in reports) == dropped
        assert outbox.integrity_check() == "ok"


def fill_to_the_last_byte(path: Path) -> None:
    """Another process's file that takes every byte the filesystem has left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)


@pytest.mark.slow
def test_a_disk_filled_to_the_last_byte_keeps_as_many_newest_events_as_the_freed_reserve_holds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: each SQLITE_FULL cut the bound to 80 % of what was stored, again and again: 166 events kept of a
    4 MB reserve's worth, and a log line per dropped event."""
    reserve = 4 * 1024 * 1024
    reports: list[DropReport] = []
    with small_tmpfs(tmp_path / "disk", "16m") as disk, caplog.at_level(logging.WARNING, "daemon.outbox"):
        limits = OutboxLimits(max_bytes=256 * 1024 * 1024, max_age_s=3600)
        with Outbox(disk / "outbox.sqlite3", limits, reserve_bytes=reserve, on_drop=reports.append) as outbox:
            for index in range(200):
                outbox.append("cam", f"before{index}", lambda seq: b"x" * 1000)
            # Given another process fills the disk to the last byte while the broker is down
            fill_to_the_last_byte(disk / "someone-elses.log")
            assert os.statvfs(disk).f_bavail == 0
            # When 6,000 more events come
            started = time.monotonic()
            for index in range(6000):
                outbox.append("cam", f"e{index}", lambda seq: b"x" * 1000)
            took = time.monotonic() - started
            stats = outbox.stats()
            kept = [e.seq for e in outbox.pending(10_000)]
        # Then it keeps the newest, gapless, as many as the freed reserve holds less SQLite's margin (>= half of it)
        assert stats.pending_bytes >= reserve // 2, stats
        assert kept == list(range(6201 - len(kept), 6201))
        assert sum(r.dropped for r in reports) + stats.pending_events == 6200
        # And the drops are logged as ranges, at most a line a second, not one per event
        lines = [r for r in caplog.records if r.getMessage() == "outbox_dropped"]
        assert 1 <= len(lines) <= took + 2, (len(lines), took)
        assert sum(r.dropped for r in lines) == sum(r.dropped for r in reports)  # type: ignore[attr-defined]
