"""Outputs with their own place in the outbox (schema v4): each output reads what waits for it and acks its own
rows; a row goes once every output that takes its kind has it. Real SQLite files, as in the daemon."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from daemon.outbox import MQTT, Outbox, OutboxLimits, OutputSpec
from daemon.outbox.schema import APPLICATION_ID, MIGRATIONS
from daemon.topics import event_topic

ROOMY = OutboxLimits(max_bytes=10_000_000, max_age_s=1e9, kind_max_bytes={"snapshot": 10_000_000,
                                                                          "verdict": 10_000_000})
MQTT_AND_PLC = (OutputSpec(MQTT), OutputSpec("plc", frozenset({"verdict"}), resend_in_grace=False))


def open_outbox(path: Path, outputs: tuple[OutputSpec, ...] = MQTT_AND_PLC, **kwargs: float) -> Outbox:
    return Outbox(path, ROOMY, synchronous="NORMAL", outputs=outputs, **kwargs)  # type: ignore[arg-type]


def add(outbox: Outbox, kind: str, name: str) -> int:
    return outbox.append("cam", name, lambda seq: name.encode(), kind=kind).rowid


def test_each_output_sees_the_rows_of_its_kinds_and_a_row_goes_when_every_taker_has_it(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "o.db") as outbox:
        defect, verdict = add(outbox, "defect", "d1"), add(outbox, "verdict", "v1")
        # Each output reads only what waits for it
        assert [e.rowid for e in outbox.pending(10, output=MQTT)] == [defect, verdict]
        assert [e.rowid for e in outbox.pending(10, output="plc")] == [verdict]
        # When the PLC output has the verdict, MQTT still has it waiting, and the row stays
        assert outbox.ack(verdict, output="plc")
        assert not outbox.ack(verdict, output="plc"), "a second ack by the same output counts once"
        assert outbox.pending(10, output="plc") == []
        assert [e.rowid for e in outbox.pending(10, output=MQTT)] == [defect, verdict]
        assert outbox.stats().other_kinds == {"verdict": (1, 2)}
        # When MQTT has it too, it is delivered: it leaves the queue
        assert outbox.ack_many([defect, verdict], output=MQTT) == 2
        assert outbox.pending(10, output=MQTT) == [] and outbox.stats().other_kinds == {}
        assert outbox.stats().pending_events == 0
        assert outbox.integrity_check() == "ok"


def test_each_outputs_place_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with open_outbox(path) as outbox:
        rows = [add(outbox, "verdict", f"v{i}") for i in range(4)]
        outbox.ack_many(rows[:3], output="plc")
        outbox.ack_many(rows[:1], output=MQTT)
    with open_outbox(path) as outbox:
        assert [e.rowid for e in outbox.pending(10, output="plc")] == rows[3:]
        assert [e.rowid for e in outbox.pending(10, output=MQTT)] == rows[1:]


def test_an_output_removed_from_the_settings_gives_up_its_rows_and_a_new_one_takes_rows_from_then_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.db"
    with open_outbox(path) as outbox:
        old = add(outbox, "verdict", "v-old")
        outbox.ack(old, output=MQTT)  # only the PLC output still waits for it
        waiting_for_both = add(outbox, "verdict", "v-both")
    # When the PLC output is no longer configured
    with open_outbox(path, outputs=(OutputSpec(MQTT),)) as outbox:
        # Then the row that waited for it alone is delivered; the other still waits for MQTT
        assert [e.rowid for e in outbox.pending(10, output=MQTT)] == [waiting_for_both]
        assert outbox.stats().other_kinds == {"verdict": (1, 6)}
        assert outbox.integrity_check() == "ok"
    # When it comes back, it takes what is stored from then on, not what it gave up
    with open_outbox(path) as outbox:
        assert outbox.pending(10, output="plc") == []
        new = add(outbox, "verdict", "v-new")
        assert [e.rowid for e in outbox.pending(10, output="plc")] == [new]


def test_a_kind_no_output_takes_is_not_kept_waiting(tmp_path: Path) -> None:
    only_plc = (OutputSpec("plc", frozenset({"verdict"}), resend_in_grace=False),)
    with open_outbox(tmp_path / "o.db", outputs=only_plc) as outbox:
        add(outbox, "defect", "d1")
        assert outbox.stats().pending_events == 0
        assert outbox.integrity_check() == "ok"


def test_a_dead_letter_for_one_output_leaves_the_row_waiting_for_the_others_and_goes_back_to_that_output_only(
    tmp_path: Path,
) -> None:
    with open_outbox(tmp_path / "o.db") as outbox:
        verdict = add(outbox, "verdict", "v1")
        assert outbox.dead_letter(verdict, output=MQTT, code=0x87, reason="not authorized")
        assert outbox.pending(10, output=MQTT) == []
        assert [e.rowid for e in outbox.pending(10, output="plc")] == [verdict], "the PLC still gets it"
        # A dead letter whose row still waits for another output waits for it too (a seq is stored once)
        assert outbox.requeue_dead_letters() == 0 and len(outbox.dead_letters()) == 1
        assert outbox.ack(verdict, output="plc")
        assert outbox.requeue_dead_letters() == 1 and outbox.dead_letters() == []
        again = outbox.pending(10, output=MQTT)
        assert [e.event_id for e in again] == ["v1"] and again[0].rowid > verdict
        assert outbox.pending(10, output="plc") == [], "not twice to the PLC"
        assert outbox.integrity_check() == "ok"


def test_the_ack_grace_runs_from_the_last_outputs_ack(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "o.db", ack_grace_s=60.0) as outbox:
        verdict = add(outbox, "verdict", "v1")
        outbox.ack(verdict, output="plc")
        outbox.ack(verdict, output=MQTT)
        assert outbox.stats().other_kinds == {}
        row = outbox._conn.execute("SELECT acked_clock FROM events WHERE id = ?", (verdict,)).fetchone()  # type: ignore[union-attr]
        assert row is not None and row[0] is not None, "kept for its grace, marked delivered"


def test_a_v3_outbox_is_migrated_and_its_waiting_rows_wait_for_mqtt(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for statement in (s for migration in MIGRATIONS[:3] for s in migration):
        conn.execute(statement)
    conn.execute("PRAGMA user_version=3")
    for seq in range(1, 4):
        conn.execute("INSERT INTO events (camera_id, kind, seq, event_id, topic, payload, created_at, acked_clock)"
                     " VALUES ('cam', 'defect', ?, ?, 't', x'00', 1e9, ?)", (seq, f"e{seq}", 5.0 if seq == 1 else None))
    conn.execute("INSERT INTO seq_counters VALUES ('cam', 3)")
    for view in ("frame", "crop"):  # a picture's view was in its topic only
        conn.execute("INSERT INTO events (camera_id, kind, seq, event_id, topic, payload, created_at) VALUES "
                     "('cam', 'snapshot', ?, 's1', ?, x'ff', 1e9)", (1 if view == "frame" else 2,
                                                                    f"lw/cam/snapshots/s1/{view}"))
    conn.execute("INSERT INTO seq_counters VALUES ('cam' || char(31) || 'snapshot', 2)")
    assert int(conn.execute("PRAGMA application_id").fetchone()[0]) == APPLICATION_ID
    conn.close()
    with open_outbox(path) as outbox:
        pictures = [e for e in outbox.pending(10, output=MQTT) if e.kind == "snapshot"]
        assert [e.event_id for e in pictures] == ["s1/frame", "s1/crop"], "the view joins the id"
        assert [event_topic("lw", e.kind, e.camera_id, e.event_id) for e in pictures] == [
            "lw/cam/snapshots/s1/frame", "lw/cam/snapshots/s1/crop"]
        # the acked row in its grace is sent again, as before the migration; the others wait for MQTT alone
        assert [e.event_id for e in outbox.pending(10, output=MQTT) if e.kind == "defect"] == ["e1", "e2", "e3"]
        assert outbox.stats().pending_events == 2
        assert outbox.pending(10, output="plc") == []
        assert outbox.integrity_check() == "ok"


def test_mqtt_maps_each_kind_to_its_topic() -> None:
    assert event_topic("lw", "defect", "cam1", "e") == "lw/cam1/defects"
    assert event_topic("lw", "verdict", "cam1", "j") == "lw/cam1/verdicts"
    assert event_topic("lw", "snapshot", "cam1", "s9/crop") == "lw/cam1/snapshots/s9/crop"
