"""The durable outbox: real SQLite files under tmp_path, real threads, a real crashing process."""

from __future__ import annotations

import json
import logging
import os
import random
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.outbox import (
    DropReason,
    DropReport,
    Outbox,
    OutboxCorruptError,
    OutboxError,
    OutboxFullError,
    OutboxLimits,
    OutboxRetryableError,
    PayloadTooLargeError,
)
from daemon.outbox.schema import DEFECT
from daemon.outbox.stats import DROPS, OLDEST_WAITING

REPO_ROOT = Path(__file__).resolve().parents[2]
ROOMY = OutboxLimits(max_bytes=100_000_000, max_age_s=1e9)


def payload_for(camera_id: str, event_id: str) -> Callable[[int], bytes]:
    """A render() that embeds seq the way the real payload does."""
    return lambda seq: json.dumps({"camera": camera_id, "event": event_id, "seq": seq}).encode()


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def open_outbox(path: Path, limits: OutboxLimits = ROOMY, **kwargs: object) -> Outbox:
    kwargs.setdefault("synchronous", "NORMAL")  # durability is not what most tests check; speed is
    return Outbox(path, limits, **kwargs)  # type: ignore[arg-type]  # kwargs are Outbox's own


# -- seq -------------------------------------------------------------------------------------------------


def test_seq_is_gapless_per_camera_and_independent_between_cameras(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "outbox.db") as outbox:
        seqs = [(cam, outbox.append(cam, "e", lambda s: b"x").seq) for cam in ["a", "b", "a", "a", "b"]]
        assert seqs == [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2)]
        assert (outbox.last_seq("a"), outbox.last_seq("b"), outbox.last_seq("never")) == (3, 2, 0)


def test_seq_continues_after_reopen_and_is_never_reused_after_ack_or_drop(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "outbox.db"  # parents are created
    limits = OutboxLimits(max_bytes=100_000, max_age_s=1e9, max_events=2)
    with open_outbox(path, limits) as outbox:
        events = [outbox.append("cam", f"e{i}", lambda s: b"x") for i in range(4)]  # 2 dropped
        for event in events:
            outbox.ack(event.rowid)
        assert outbox.stats().pending_events == 0
    with open_outbox(path, limits) as outbox:
        assert outbox.last_seq("cam") == 4
        assert outbox.append("cam", "e4", lambda s: b"x").seq == 5


def test_render_receives_the_assigned_seq_and_a_failed_render_consumes_none(tmp_path: Path) -> None:
    def boom(seq: int) -> bytes:
        raise RuntimeError("render failed")

    with open_outbox(tmp_path / "outbox.db") as outbox:
        first = outbox.append("cam", "e1", payload_for("cam", "e1"))
        with pytest.raises(RuntimeError):
            outbox.append("cam", "e2", boom)
        with pytest.raises(TypeError):
            outbox.append("cam", "e2", lambda s: "not bytes")  # type: ignore[arg-type,return-value]
        second = outbox.append("cam", "e3", payload_for("cam", "e3"))
        assert (first.seq, second.seq) == (1, 2)
        assert json.loads(second.payload)["seq"] == 2
        assert [e.event_id for e in outbox.pending(10)] == ["e1", "e3"]


_CHILD = """
import os, sys
from pathlib import Path
from daemon.outbox import Outbox, OutboxLimits
outbox = Outbox(Path(sys.argv[1]), OutboxLimits(max_bytes=10**9, max_age_s=1e9))  # synchronous=FULL
count = int(sys.argv[2])
i = 0
while count == 0 or i < count:
    event = outbox.append("cam", f"e{i}", lambda seq: b"seq=%d" % seq)
    print(event.seq, flush=True)  # printed only after the commit returned
    i += 1
os._exit(0)  # no close(): WAL and shm files stay behind, as after a crash
"""


def _run_child(path: Path, count: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), str(count)], stdout=subprocess.PIPE, text=True, env=env
    )


def test_events_survive_a_process_that_exits_without_close(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    child = _run_child(path, 50)
    out, _ = child.communicate(timeout=30)
    assert child.returncode == 0 and out.split() == [str(i) for i in range(1, 51)]
    with open_outbox(path) as outbox:
        assert [(e.seq, e.payload) for e in outbox.pending(100)] == [(i, b"seq=%d" % i) for i in range(1, 51)]
        assert outbox.append("cam", "next", lambda s: b"x").seq == 51


def test_sigkill_mid_stream_loses_no_committed_event_and_reuses_no_seq(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    child = _run_child(path, 0)  # appends until killed
    assert child.stdout is not None
    printed = [int(child.stdout.readline()) for _ in range(100)]
    child.kill()  # SIGKILL, most likely in the middle of a transaction
    printed += [int(line) for line in child.stdout.read().split()]
    child.wait(timeout=10)
    with open_outbox(path) as outbox:
        assert outbox.integrity_check() == "ok"
        seqs = [e.seq for e in outbox.pending(100_000)]
        # Every acknowledged append is there; at most one more committed before its print.
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(printed) <= len(seqs) <= len(printed) + 1
        assert outbox.last_seq("cam") == len(seqs)
        assert outbox.append("cam", "after", lambda s: b"x").seq == len(seqs) + 1


# -- pending / ack ---------------------------------------------------------------------------------------


def test_ack_deletes_once_and_a_second_ack_returns_false(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "outbox.db") as outbox:
        event = outbox.append("cam", "e1", lambda s: b"x")
        assert outbox.ack(event.rowid) is True
        assert outbox.ack(event.rowid) is False
        assert outbox.pending(10) == []
        rowids = [outbox.append("cam", f"e{i}", lambda s: b"x").rowid for i in range(3)]
        assert outbox.ack_many([*rowids, 999_999]) == 3
        # when the table is empty again, a new event still gets a fresh rowid, so a late ack of an old
        # rowid cannot delete it and a publisher cursor at the old rowid cannot skip it
        newer = outbox.append("cam", "e9", lambda s: b"x")
        assert newer.rowid > rowids[-1]
        assert outbox.ack(rowids[-1]) is False and outbox.pending(10) == [newer]


def test_pending_is_oldest_first_and_pages_with_after_rowid(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "outbox.db") as outbox:
        stored = [outbox.append(f"cam{i % 2}", f"e{i}", lambda s: b"x") for i in range(7)]
        outbox.ack(stored[2].rowid)
        page1 = outbox.pending(3)
        page2 = outbox.pending(3, after_rowid=page1[-1].rowid)
        assert [e.event_id for e in page1 + page2] == ["e0", "e1", "e3", "e4", "e5", "e6"]
        assert outbox.pending(0) == []


def test_reopen_returns_unacked_events_with_identical_fields(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with open_outbox(path) as outbox:
        stored = [outbox.append("cam", f"e{i}", payload_for("cam", f"e{i}")) for i in range(5)]
        outbox.ack(stored[1].rowid)
    with open_outbox(path) as outbox:
        assert outbox.pending(10) == [stored[0], *stored[2:]]


# -- bounds ----------------------------------------------------------------------------------------------


def test_max_bytes_drops_oldest_keeps_the_new_event_and_reports_it(tmp_path: Path) -> None:
    reports: list[DropReport] = []
    limits = OutboxLimits(max_bytes=1000, max_age_s=1e9)
    with open_outbox(tmp_path / "outbox.db", limits, on_drop=reports.append) as outbox:
        for i in range(4):
            outbox.append("a" if i % 2 else "b", f"e{i}", lambda s: b"x" * 300)  # 1200 > 1000
        assert len(reports) == 1
        report = reports[0]
        assert (report.reason, report.dropped, report.dropped_bytes) == (DropReason.MAX_BYTES, 1, 300)
        assert [(r.camera_id, r.first_seq, r.last_seq, r.count) for r in report.cameras] == [("b", 1, 1, 1)]
        big = outbox.append("a", "big", lambda s: b"y" * 1000)  # needs everything else gone
        assert [e.event_id for e in outbox.pending(10)] == ["big"]
        assert big.seq == 3
        stats = outbox.stats()
        assert (stats.pending_events, stats.pending_bytes) == (1, 1000)
        assert stats.dropped_total == 4 and stats.dropped_by_reason == {"max_bytes": 4}


def test_a_payload_larger_than_max_bytes_is_refused_and_consumes_no_seq(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "outbox.db", OutboxLimits(max_bytes=100, max_age_s=1e9)) as outbox:
        kept = outbox.append("cam", "e1", lambda s: b"x" * 100)
        with pytest.raises(PayloadTooLargeError, match="101 bytes"):
            outbox.append("cam", "e2", lambda s: b"x" * 101)
        assert outbox.pending(10) == [kept]
        assert outbox.append("cam", "e3", lambda s: b"x").seq == 2


def test_max_age_drops_events_older_than_the_bound(tmp_path: Path) -> None:
    clock = FakeClock()
    reports: list[DropReport] = []
    limits = OutboxLimits(max_bytes=100_000, max_age_s=60)
    with open_outbox(tmp_path / "outbox.db", limits, clock=clock, monotonic=clock, on_drop=reports.append) as outbox:
        outbox.append("cam", "old", lambda s: b"x")
        clock.now += 30
        outbox.append("cam", "mid", lambda s: b"x")
        assert outbox.enforce_limits() == [] and outbox.stats().oldest_age_s == 30
        # when the first is 61 s old and the second 31 s
        clock.now += 31
        returned = outbox.enforce_limits()
        assert returned == reports and len(reports) == 1
        assert (reports[0].reason, reports[0].dropped) == (DropReason.MAX_AGE, 1)
        assert [e.event_id for e in outbox.pending(10)] == ["mid"]
        # append applies the age bound too
        clock.now += 100
        outbox.append("cam", "new", lambda s: b"x")
        assert [e.event_id for e in outbox.pending(10)] == ["new"]
        assert outbox.stats().dropped_by_reason == {"max_age": 2}


def test_a_wall_clock_step_ages_nothing_out_while_running_or_across_a_restart(tmp_path: Path) -> None:
    """A board without an RTC: NTP steps the wall clock by years once the network is up. Before, every waiting
    event's wall-clock age jumped with it and the age bound wiped the backlog at the first sweep."""
    wall, monotonic = FakeClock(1_000_000.0), FakeClock(50.0)  # booted near 1970, offline
    limits = OutboxLimits(max_bytes=100_000, max_age_s=86400)
    path = tmp_path / "outbox.db"

    def reopen(boot: str, mono: FakeClock) -> Outbox:
        return open_outbox(path, limits, clock=wall, monotonic=mono, boot=boot)

    with reopen("boot-1", monotonic) as outbox:
        for index in range(5):
            outbox.append("cam", f"e{index}", lambda s: b"x")
        monotonic.now += 60
        assert outbox.enforce_limits() == []  # saved: the wall clock still in 1970
        wall.now = 1_790_000_000.0  # NTP: 56 years forward in one step
        assert outbox.enforce_limits() == []
        assert outbox.stats().oldest_age_s == pytest.approx(60)
    # The daemon restarts on the same boot 30 s later, the wall clock stepped again: the system's monotonic clock
    # says what went by
    wall.now += 365 * 86400
    with reopen("boot-1", FakeClock(monotonic.now + 30)) as outbox:
        assert outbox.stats().oldest_age_s == pytest.approx(90)
    # A reboot two hours later by a wall clock that is set, before and after: the downtime counts
    wall.now += 7200
    with reopen("boot-2", FakeClock(7.0)) as outbox:
        assert outbox.stats().oldest_age_s == pytest.approx(90 + 7200)
        assert [e.seq for e in outbox.pending(10)] == [1, 2, 3, 4, 5]
    # A reboot with the clock back in 1970 (the RTC-less board again): no time is taken as gone by
    wall.now = 1_000_000.0
    with reopen("boot-3", FakeClock(3.0)) as outbox:
        assert outbox.stats().oldest_age_s == pytest.approx(90 + 7200)
        assert outbox.enforce_limits() == []
    # It runs offline in 1970 for an hour, then reboots into the right time: not 56 years of downtime
    with reopen("boot-4", FakeClock(5.0)) as outbox:
        assert outbox.enforce_limits() == []
    wall.now = 1_790_100_000.0
    with reopen("boot-5", FakeClock(9.0)) as outbox:
        assert outbox.stats().oldest_age_s == pytest.approx(90 + 7200)
        assert [e.seq for e in outbox.pending(10)] == [1, 2, 3, 4, 5]


def test_an_acknowledged_event_stays_its_grace_and_is_sent_again_after_a_crash(tmp_path: Path) -> None:
    """The broker saves its store after it acknowledges; a power cut takes the broker and the daemon together. An
    acknowledged event is no longer waiting (figures, bounds) but stays for the grace, so a crash re-sends it."""
    monotonic = FakeClock(100.0)
    reports: list[DropReport] = []
    path = tmp_path / "outbox.db"
    limits = OutboxLimits(max_bytes=100_000, max_age_s=1e9, max_events=2)
    outbox = open_outbox(path, limits, monotonic=monotonic, ack_grace_s=2.0, on_drop=reports.append)
    stored = [outbox.append("cam", f"e{i}", lambda s: b"x" * 10) for i in range(2)]
    assert outbox.ack_many([stored[0].rowid, stored[1].rowid]) == 2
    # Then they are no longer waiting, and a bound that drops the oldest reports no loss for them
    assert (outbox.stats().pending_events, outbox.stats().pending_bytes) == (0, 0)
    assert [e.seq for e in outbox.pending(10)] == [1, 2]  # still stored: a restart would re-send them
    for index in range(3):
        outbox.append("cam", f"n{index}", lambda s: b"x" * 10)
    assert [(r.reason, r.dropped, r.cameras[0].first_seq, r.cameras[0].last_seq) for r in reports] == [
        (DropReason.MAX_EVENTS, 1, 3, 3)], "only the waiting event that went is a loss; the delivered ones are not"
    assert [e.seq for e in outbox.pending(10)] == [4, 5]
    # When the process dies within the grace of an ack (no close), a restart sends that event again
    monotonic.now += 1
    outbox.ack_many([outbox.pending(10)[0].rowid])
    del outbox  # a crash: the connection is dropped, nothing is closed
    with open_outbox(path, limits, monotonic=monotonic, ack_grace_s=2.0) as again:
        assert [e.seq for e in again.pending(10)] == [4, 5]
        assert again.stats().pending_events == 1  # the restart's publisher sends both; only 5 counts as waiting
        # and once the grace is over, the next sweep deletes it
        monotonic.now += 5
        again.enforce_limits()
        assert [e.seq for e in again.pending(10)] == [5]
        again.ack_many([again.pending(10)[0].rowid])
    # A clean close deletes what waits out its grace: the broker lives on and saves on its own
    with open_outbox(path, limits, monotonic=monotonic, ack_grace_s=2.0) as last:
        assert last.pending(10) == [] and last.integrity_check() == "ok"


def test_the_outbox_stats_are_index_lookups_at_any_depth(tmp_path: Path) -> None:
    """stats() runs under the outbox's lock on every /metrics scrape: it must not scan the rows (it ran
    min(created_at) over every row). SQLite's own plan for each of its queries says SEARCH, never SCAN."""
    with open_outbox(tmp_path / "outbox.db") as outbox:
        outbox.append("cam", "e", lambda s: b"x")
        outbox.stats()
    conn = sqlite3.connect(tmp_path / "outbox.db")
    queries: list[tuple[str, tuple[str, ...]]] = [
        (OLDEST_WAITING, (DEFECT,)), ("SELECT kind, events, bytes FROM kind_totals", ()),
        ("SELECT events, bytes FROM dead_totals", ()), (DROPS, ())]
    for query, params in queries:
        plan = " ".join(str(row[-1]) for row in conn.execute(f"EXPLAIN QUERY PLAN {query}", params))
        table = query.split(" FROM ")[1].split()[0]
        small = table in ("kind_totals", "dead_totals", "drop_counters")  # a row per kind or reason: O(1)
        assert "SEARCH" in plan or small, (query, plan)
        assert not ("SCAN" in plan and table == "events"), (query, plan)
    conn.close()


def test_max_events_drops_oldest_beyond_the_count(tmp_path: Path) -> None:
    limits = OutboxLimits(max_bytes=100_000, max_age_s=1e9, max_events=3)
    with open_outbox(tmp_path / "outbox.db", limits, on_drop=None) as outbox:
        for i in range(5):
            outbox.append("cam", f"e{i}", lambda s: b"x")
        assert [e.seq for e in outbox.pending(10)] == [3, 4, 5]
        assert outbox.stats().dropped_by_reason == {"max_events": 2}


def test_dropped_total_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    limits = OutboxLimits(max_bytes=10, max_age_s=1e9)
    with open_outbox(path, limits, on_drop=None) as outbox:
        for _ in range(5):
            outbox.append("cam", "e", lambda s: b"x" * 10)
    with open_outbox(path, limits, on_drop=None) as outbox:
        assert outbox.stats().dropped_total == 4
        outbox.append("cam", "e", lambda s: b"x" * 10)
        assert outbox.stats().dropped_total == 5


def test_integrity_and_totals_hold_after_heavy_churn(tmp_path: Path) -> None:
    rng = random.Random(7)
    limits = OutboxLimits(max_bytes=50_000, max_age_s=1e9, max_events=300)
    path = tmp_path / "outbox.db"
    with open_outbox(path, limits, on_drop=None) as outbox:
        live: list[int] = []
        for i in range(3000):
            event = outbox.append(f"cam{i % 4}", f"e{i}", lambda s: os.urandom(rng.randrange(1, 800)))
            live.append(event.rowid)
            if rng.random() < 0.4:
                outbox.ack(live.pop(rng.randrange(len(live))))
        stats = outbox.stats()
        assert stats.pending_bytes <= 50_000 and stats.pending_events <= 300
        assert stats.pending_events + stats.dropped_total + (3000 - len(live)) >= 3000
        assert outbox.integrity_check() == "ok"
    with sqlite3.connect(path) as raw:  # the same, seen from outside
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# -- threads ---------------------------------------------------------------------------------------------


def test_concurrent_append_and_ack_lose_nothing_and_duplicate_no_seq(tmp_path: Path) -> None:
    total = 2000
    outbox = open_outbox(tmp_path / "outbox.db", synchronous="OFF")
    seen: list[tuple[str, int, str]] = []
    done = threading.Event()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for i in range(total):
                outbox.append(f"cam{i % 3}", f"e{i}", payload_for(f"cam{i % 3}", f"e{i}"))
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def consume() -> None:
        try:
            while True:
                finished = done.is_set()  # read before the query, so the final drain sees everything
                batch = outbox.pending(64)
                for event in batch:
                    assert json.loads(event.payload)["seq"] == event.seq
                    seen.append((event.camera_id, event.seq, event.event_id))
                    assert outbox.ack(event.rowid)
                if finished and not batch:
                    return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=produce, name="test:produce"), threading.Thread(target=consume)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(seen) == total and len({e[2] for e in seen}) == total
    for cam in ("cam0", "cam1", "cam2"):
        seqs = [seq for camera, seq, _ in seen if camera == cam]
        assert seqs == list(range(1, len(seqs) + 1))  # gapless, in order, no duplicate
    assert outbox.stats().pending_events == 0 and outbox.integrity_check() == "ok"
    outbox.close()


# -- failures --------------------------------------------------------------------------------------------


def test_a_file_that_is_not_a_database_raises_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is a config file, not SQLite\n" * 200)
    with pytest.raises(OutboxCorruptError, match=r"outbox\.db.*not a database.*move the file aside"):
        Outbox(path, ROOMY)
    assert path.read_bytes().startswith(b"this is a config file")  # left for forensics


def test_another_apps_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE users (name TEXT)")
    raw.close()
    with pytest.raises(OutboxError, match="not a linewatch outbox"):
        Outbox(path, ROOMY)
    with sqlite3.connect(path) as raw:
        assert [r[0] for r in raw.execute("SELECT name FROM sqlite_master")] == ["users"]
    raw.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    Outbox(path, ROOMY).close()
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(OutboxError, match="v99, newer"):
        Outbox(path, ROOMY)


def test_unopenable_paths_raise_outbox_error(tmp_path: Path) -> None:
    with pytest.raises(OutboxError, match="cannot open"):
        Outbox(tmp_path, ROOMY)  # a directory
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutboxError, match="cannot create outbox directory"):
        Outbox(tmp_path / "file" / "outbox.db", ROOMY)


def test_a_full_file_drops_the_oldest_events_for_the_newest_and_reports_each_drop(tmp_path: Path) -> None:
    # Given an outbox whose file may not grow past 96 KiB (SQLite's max_page_count: SQLITE_FULL, as a full disk)
    path = tmp_path / "outbox.db"
    limits = OutboxLimits(max_bytes=10_000_000, max_age_s=1e9, max_file_bytes=96 * 1024)
    reports: list[DropReport] = []
    with Outbox(path, limits, on_drop=reports.append) as outbox:
        # When far more is appended than fits
        for i in range(300):
            outbox.append("cam", f"e{i}", lambda s: b"x" * 2000)
        # Then every append succeeded, the oldest events gave way, and every drop was reported with its reason
        stats = outbox.stats()
        assert outbox.last_seq("cam") == 300
        dropped = sum(r.dropped for r in reports)
        assert {r.reason for r in reports} == {DropReason.DISK_FULL}
        assert dropped == stats.dropped_by_reason["disk_full"] == 300 - stats.pending_events
        kept = [e.seq for e in outbox.pending(1000)]
        assert kept == list(range(301 - len(kept), 301)), "the newest events are the ones kept, without a gap"
        assert outbox.integrity_check() == "ok"


def test_a_full_file_with_nothing_left_to_drop_raises_outbox_full(tmp_path: Path) -> None:
    limits = OutboxLimits(max_bytes=10_000_000, max_age_s=1e9, max_file_bytes=96 * 1024)
    with open_outbox(tmp_path / "outbox.db", limits) as outbox:
        with pytest.raises(OutboxFullError, match="full") as caught:
            outbox.append("cam", "huge", lambda s: b"x" * 200_000)  # larger than the whole file may be
        assert isinstance(caught.value, OutboxRetryableError)
        assert outbox.last_seq("cam") == 0  # the failed append consumed no seq
        assert outbox.append("cam", "small", lambda s: b"x" * 100).seq == 1


def test_a_closed_outbox_raises_outbox_error(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path / "outbox.db")
    outbox.close()
    outbox.close()  # idempotent
    with pytest.raises(OutboxError, match="closed"):
        outbox.pending(1)


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        OutboxLimits(max_bytes=0, max_age_s=1)
    with pytest.raises(ValueError):
        OutboxLimits(max_bytes=1, max_age_s=0)
    with pytest.raises(ValueError):
        OutboxLimits(max_bytes=1, max_age_s=1, max_events=-1)


def test_errors_are_classified_without_sqlite_errorcode_as_on_python_310() -> None:
    from daemon.outbox.errors import translate as _translate

    # Constructed by hand, these carry no sqlite_errorcode, like every sqlite3 error before 3.11.
    assert isinstance(_translate(sqlite3.OperationalError("database or disk is full"), "x"), OutboxFullError)
    locked = _translate(sqlite3.OperationalError("database is locked"), "x")
    assert isinstance(locked, OutboxRetryableError)
    notadb = _translate(sqlite3.DatabaseError("file is not a database"), "x")
    assert isinstance(notadb, OutboxCorruptError)
    assert type(_translate(sqlite3.OperationalError("no such table: x"), "x")) is OutboxError


def test_a_failing_on_drop_does_not_fail_the_committed_append(tmp_path: Path) -> None:
    def broken_sink(report: DropReport) -> None:
        raise RuntimeError("log sink down")

    limits = OutboxLimits(max_bytes=10, max_age_s=1e9)
    with open_outbox(tmp_path / "outbox.db", limits, on_drop=broken_sink) as outbox:
        outbox.append("cam", "e1", lambda s: b"x" * 10)
        second = outbox.append("cam", "e2", lambda s: b"x" * 10)  # drops e1, then the sink raises
        assert outbox.pending(10) == [second]
        assert outbox.stats().dropped_total == 1


# -- dead letters and the drop log -------------------------------------------------------------------------


def test_a_dead_letter_is_kept_aside_bounded_counted_and_can_be_requeued(tmp_path: Path) -> None:
    reports: list[DropReport] = []
    limits = OutboxLimits(max_bytes=100_000, max_age_s=1e9, dead_letter_max_bytes=250)
    with open_outbox(tmp_path / "outbox.db", limits, on_drop=reports.append) as outbox:
        stored = [outbox.append("cam", f"e{i}", lambda s: b"x" * 100) for i in range(5)]
        # When an output refuses three of them for good
        for event in stored[:3]:
            assert outbox.dead_letter(event.rowid, output="mqtt", code=0x87, reason="Not authorized")
        assert not outbox.dead_letter(stored[0].rowid, output="mqtt", code=0x87, reason="again"), "gone already"
        # Then they leave the queue, the oldest beyond the bound (250 bytes: two) is dropped and counted
        assert [e.seq for e in outbox.pending(10)] == [4, 5]
        letters = outbox.dead_letters()
        assert [(d.seq, d.code, d.output, d.payload_bytes) for d in letters] == [(2, 0x87, "mqtt", 100),
                                                                                (3, 0x87, "mqtt", 100)]
        assert (outbox.stats().dead_letters, outbox.stats().dead_letter_bytes) == (2, 200)
        assert [(r.kind, r.reason, r.dropped) for r in reports] == [("dead_letter", DropReason.MAX_BYTES, 1)]
        assert outbox.integrity_check() == "ok"
        # When they are requeued, they come after what waits, with their seq and payload
        assert outbox.requeue_dead_letters() == 2
        assert [e.seq for e in outbox.pending(10)] == [4, 5, 2, 3]
        assert outbox.stats().dead_letters == 0 and outbox.integrity_check() == "ok"


def test_drops_are_logged_as_ranges_at_most_one_line_a_second_per_kind_and_reason() -> None:
    from daemon.outbox.droplog import DropLog
    from daemon.outbox.types import DroppedRange

    clock = FakeClock(100.0)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("daemon.outbox")
    logger.addHandler(handler)
    try:
        drops = DropLog(clock=clock)
        for seq in range(1, 101):  # 100 drops of one event each, 10 ms apart
            drops.add(DropReport(DropReason.DISK_FULL, 1, 10, (DroppedRange("cam", seq, seq, 1),)))
            clock.now += 0.01
        drops.add(DropReport(DropReason.MAX_AGE, 2, 20, (DroppedRange("cam", 200, 201, 2),)))
        drops.flush(everything=True)
    finally:
        logger.removeHandler(handler)
    lines = [(r.reason, r.dropped, r.cameras, r.drops) for r in records]  # type: ignore[attr-defined]
    # the first drop at once; the next 99 merged into one line a second later; another reason has its own line
    assert lines == [("disk_full", 1, {"cam": [1, 1, 1]}, 1), ("disk_full", 99, {"cam": [2, 100, 99]}, 99),
                     ("max_age", 2, {"cam": [200, 201, 2]}, 1)], lines
