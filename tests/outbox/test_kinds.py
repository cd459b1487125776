"""Kinds in the outbox (issue 9): snapshots with their own seq and byte bound, never evicting defect events;
and the migration from the schema that had no kinds."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from daemon.outbox import DropReason, DropReport, Outbox, OutboxFullError, OutboxLimits

SNAPSHOT = "snapshot"


def limits(**extra: object) -> OutboxLimits:
    return OutboxLimits(max_bytes=1_000_000, max_age_s=1e9, kind_max_bytes={SNAPSHOT: 50_000}, **extra)  # type: ignore[arg-type]


def test_snapshots_have_their_own_seq_and_bound_and_never_evict_defect_events(tmp_path: Path) -> None:
    reports: list[DropReport] = []
    with Outbox(tmp_path / "o.db", limits(), on_drop=reports.append) as outbox:
        for index in range(20):
            outbox.append("cam", f"d{index}", lambda s: b"{}" * 100)
            outbox.append("cam", f"s{index}", lambda s: b"\xff" * 10_000, kind=SNAPSHOT)
        # 200 KB of pictures against a 50 KB bound: only the oldest pictures went
        stats = outbox.stats()
        assert stats.pending_events == 20 and stats.other_kinds[SNAPSHOT] == (5, 50_000)
        assert {r.kind for r in reports} == {SNAPSHOT} and sum(r.dropped for r in reports) == 15
        assert stats.dropped_total == 0, "snapshot drops are not gaps in the events' seq"
        pending = outbox.pending(100)
        assert [e.seq for e in pending if e.kind == "defect"] == list(range(1, 21))
        assert [e.seq for e in pending if e.kind == SNAPSHOT] == list(range(16, 21))
        assert outbox.last_seq("cam") == 20 and outbox.last_seq("cam", SNAPSHOT) == 20
        assert outbox.integrity_check() == "ok"


def test_a_full_disk_drops_every_picture_before_any_defect_event(tmp_path: Path) -> None:
    reports: list[DropReport] = []
    ceiling = OutboxLimits(max_bytes=10_000_000, max_age_s=1e9, max_file_bytes=256 * 1024,
                           kind_max_bytes={SNAPSHOT: 10_000_000})
    with Outbox(tmp_path / "o.db", ceiling, on_drop=reports.append) as outbox:
        for index in range(400):
            outbox.append("cam", f"d{index}", lambda s: b"x" * 300)
            # a picture that finds no older picture to replace is refused, never a defect event dropped
            with contextlib.suppress(OutboxFullError):
                outbox.append("cam", f"s{index}", lambda s: b"\xff" * 3000, kind=SNAPSHOT)
        disk = [r for r in reports if r.reason is DropReason.DISK_FULL]
        assert disk, "the ceiling was never reached"
        first_defect_drop = next((i for i, r in enumerate(disk) if r.kind == "defect"), len(disk))
        # every defect drop came after the pictures were gone at that moment
        assert all(r.kind == SNAPSHOT for r in disk[:first_defect_drop])
        stats = outbox.stats()
        dropped_defects = sum(r.dropped for r in disk if r.kind == "defect")
        assert stats.pending_events + dropped_defects == 400
        assert outbox.integrity_check() == "ok"


def test_a_v1_outbox_is_migrated_keeping_its_events_ids_and_seq(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    # Given an outbox written by schema v1 (built here from v1's own statements)
    from daemon.outbox.schema import APPLICATION_ID, MIGRATIONS

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version=1")
    for seq in range(1, 6):
        conn.execute("INSERT INTO events (camera_id, seq, event_id, topic, payload, created_at) VALUES (?,?,?,?,?,?)",
                     ("cam", seq, f"e{seq}", "t", b"p", 1e9 + seq))
    conn.execute("INSERT INTO seq_counters VALUES ('cam', 5)")
    conn.execute("DELETE FROM events WHERE seq = 5")  # acked: its id must never come back
    assert int(conn.execute("PRAGMA application_id").fetchone()[0]) == APPLICATION_ID
    conn.close()
    # When the current linewatch opens it
    with Outbox(path, limits()) as outbox:
        kept = outbox.pending(10)
        assert [(e.seq, e.kind) for e in kept] == [(s, "defect") for s in range(1, 5)]
        new = outbox.append("cam", "e6", lambda s: b"p")
        # Then seq continues, and no id is reused (the acked row 5's id stays retired)
        assert new.seq == 6 and new.rowid == 6
        assert outbox.stats().pending_events == 5
        # and the rows from before keep their age on the outbox's own clock (schema v3)
        assert abs(outbox.stats().oldest_age_s - (time.time() - (1e9 + 1))) < 60
        assert outbox.integrity_check() == "ok"


def test_on_a_full_disk_a_picture_only_replaces_pictures_and_is_refused_rather_than_evict_a_defect(
    tmp_path: Path,
) -> None:
    reports: list[DropReport] = []
    ceiling = OutboxLimits(max_bytes=10_000_000, max_age_s=1e9, max_file_bytes=192 * 1024,
                           kind_max_bytes={SNAPSHOT: 10_000_000})
    with Outbox(tmp_path / "o.db", ceiling, on_drop=reports.append) as outbox:
        index = 0
        while not [r for r in reports if r.reason is DropReason.DISK_FULL]:  # fill the file with defect events
            outbox.append("cam", f"d{index}", lambda s: b"x" * 2000)
            index += 1
        stored = outbox.stats().pending_events
        before = len(reports)
        # When a picture larger than any room the file has comes, with no older picture to replace
        with pytest.raises(OutboxFullError):
            outbox.append("cam", "big", lambda s: b"\xff" * 64 * 1024, kind=SNAPSHOT)
        # Then it is refused, and no defect event gave way to it
        assert outbox.stats().pending_events == stored, "a picture evicted a defect event"
        assert len(reports) == before
        # When small pictures come, they take the room there is and then replace each other
        for picture in range(20):
            outbox.append("cam", f"s{picture}", lambda s: b"\xff" * 3000, kind=SNAPSHOT)
        assert outbox.stats().pending_events == stored, "a picture evicted a defect event"
        assert all(r.kind == SNAPSHOT for r in reports[before:]), "only pictures gave way to pictures"
        # And the refused picture did not lower the bound for events: each new defect event replaces about one
        for index in range(20):
            outbox.append("cam", f"later{index}", lambda s: b"x" * 2000)
        assert outbox.stats().pending_events >= stored - 3, (outbox.stats().pending_events, stored)
