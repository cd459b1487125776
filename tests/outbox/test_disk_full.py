"""The outbox on a filesystem that really fills up: a 400 KB tmpfs, as a filler file leaves of a 1 MB tmpfs.

Mounting the tmpfs needs root (tests/support/disk.py).
"""

from __future__ import annotations

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
            stored = outbox.append("cam", f"e{index}", "t", lambda seq: b"x" * 900)
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
            outbox.append("cam", "after", "t", lambda seq: b"x" * 900)
            time.sleep(0.05)  # the pace of a camera's events; the deadline above is what bounds the wait
        assert not outbox.disk_full
        # Then the configured bounds alone apply again: nothing more is dropped for disk space
        dropped = sum(r.dropped for r in reports)
        for index in range(100):
            outbox.append("cam", f"later{index}", "t", lambda seq: b"x" * 900)
        assert sum(r.dropped for r in reports) == dropped
        assert outbox.integrity_check() == "ok"
