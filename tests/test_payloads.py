"""The payload formats (daemon/payloads.py): every message the daemon renders, in this release's form and in 0.1's
(LINEWATCH_MQTT__PAYLOADS=0.1), validates against its JSON Schema in schemas/, and the two forms differ in the
documented renames only."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import pytest

from daemon.events.jobs import Finding, JobResult, Trigger, Verdict, Why
from daemon.events.schema import render_defect, render_frame_defects, render_stats, render_verdict
from daemon.events.stage import Percentiles
from daemon.events.tracking import DefectView, Observation
from daemon.frames import BBox, CameraState, DefectEvent, Detection, EndReason, ModelInfo
from daemon.payloads import CONNECTION_LOST, CURRENT, PREVIOUS, PREVIOUS_SCHEMA, previous
from daemon.publish.status import RUNNING, StatusPayloads
from tests.integration.payloads import validate_message

SHA = "ab14a24c51242e4c439d7b3e77501ec41cbc8adfe608cea0e91256db0efe099b"
MODEL = ModelInfo("linewatch-defects", SHA, 640, "cpu", ("scratch", "dent", "stain", "missing_component"))
AT = dt.datetime(2026, 12, 7, 3, 30, 0, 125000, tzinfo=dt.timezone.utc)
BOX = BBox(503.0, 91.8, 554.3, 129.0)
FINGERPRINT = {"linewatch": "0.2.0", "python": "3.11.7", "torch": "2.14.1", "cuda": "none", "gpu": "none",
               "device": "cpu", "opencv": "4.12.0", "ultralytics": "8.4.0", "model_sha256": SHA}


def _seen(seq: int, confidence: float) -> Observation:
    return Observation(seq, AT + dt.timedelta(milliseconds=40 * seq), 100.0 + seq / 25, "stain", 2, confidence, BOX,
                       12.5)


def _defect(kind: str, reason: EndReason | None) -> DefectView:
    return DefectView(kind, "f69f3858-e614-4c45-bd29-dc8efe56aac5", 1, _seen(0, 0.8), _seen(18, 0.85),
                      _seen(4, 0.91), 19, reason)


def _verdict() -> JobResult:
    trigger = Trigger("cam", "3b1d9a36-6c53-4a39-a1a5-5d3c5b6d9a10", "part-7", "plc_opcua", 100.0, AT)
    return JobResult(trigger, Verdict.UNKNOWN, (Why.FRAMES_DROPPED,), (Finding("dent", 1, 0.9, BOX, 3, 2),),
                     5, 1, 1, 6, 100.2, AT + dt.timedelta(milliseconds=200))


def _stats(release: str) -> bytes:
    figures = {"fps_in": 15.0, "fps_out": 14.9, "frames_read": 150, "frames_inspected": 149, "frames_dropped": 1,
               "inference_ms": Percentiles(12.1, 20.4, 31.0).as_dict(),
               "frame_age_ms": Percentiles(30.2, 48.0, 61.7).as_dict(), "tracks_open": 2,
               "events": {"new": 3, "end": 2, "committed": 5}, "outbox": {"events": 0, "bytes": 0, "snapshots": 0}}
    return render_stats("cam", 10.0, figures, release)  # type: ignore[arg-type]


def _messages(release: Any) -> list[tuple[str, bytes]]:
    status = StatusPayloads("linewatch-cam", ("cam",), MODEL, FINGERPRINT, release)
    frame_event = DefectEvent("434cf9ec-3cda-48a2-a897-5d5450aeadbe", "cam", 4, AT, 100.0, 640, 480, MODEL,
                              (Detection("stain", 2, 0.91, BOX),), 12.5)
    return [
        *(("lw/cam/defects", render_defect(_defect(kind, reason), event_id="08680a3c-f6ba-40ee-ac94-e19e3a3f967f",
                                            camera_id="cam", model=MODEL, width=640, height=480, seq=seq,
                                            committed_at=AT, total_ms=3.5, snapshot=None, release=release))
          for seq, (kind, reason) in enumerate((("new", None), ("end", EndReason.GONE),
                                                ("end", EndReason.END_OF_STREAM),
                                                ("end", EndReason.RESOLUTION_CHANGE)), 1)),
        ("lw/cam/defects", render_frame_defects(frame_event, 5, AT, 4.0, release)),
        ("lw/cam/verdicts", render_verdict(_verdict(), seq=1, model=MODEL, committed_at=AT, release=release)),
        ("lw/cam/stats", _stats(release)),
        ("lw/cam/status", status.camera("cam", CameraState.ONLINE, "streaming", disk_full=True, dead_letters=2)),
        ("lw/cam/status", status.camera("cam", CameraState.OFFLINE, "shutdown", disk_full=False, dead_letters=0)),
        ("lw/_daemon/linewatch-cam/availability", status.availability(online=True, reason=RUNNING)),
        ("lw/_daemon/linewatch-cam/availability",
         status.availability(online=False, reason=CONNECTION_LOST, with_time=False)),
    ]


CURRENT_SCHEMAS = ["defect-v3"] * 4 + ["frame-defects-v1", "verdict-v2", "stats-v2", "status-v2", "status-v2",
                                       "availability-v2", "availability-v2"]
PREVIOUS_SCHEMAS = ["defect-v2"] * 4 + ["defect-v1", "verdict-v1", "stats-v1", "status-v1", "status-v1",
                                        "availability-v1", "availability-v1"]


@pytest.mark.parametrize(("release", "schemas"), [(CURRENT, CURRENT_SCHEMAS), (PREVIOUS, PREVIOUS_SCHEMAS)])
def test_every_message_validates_against_the_schema_of_its_release(release: str, schemas: list[str]) -> None:
    assert [validate_message(topic, payload) for topic, payload in _messages(release)] == schemas


SNAKE = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)*$")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _items(body: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(body, dict):
        return [item for key, value in body.items() for item in [(f"{path}{key}", value), *_items(value, f"{key}.")]]
    if isinstance(body, list):
        return [item for value in body for item in _items(value, path)]
    return []


def test_this_release_names_every_time_x_at_every_enum_in_snake_case_and_hashes_in_full() -> None:
    enums = ("type", "end_reason", "reason", "state", "result", "reasons", "trigger_source", "degraded")
    for topic, payload in _messages(CURRENT):
        body = json.loads(payload)
        assert body["schema"] in PREVIOUS_SCHEMA, topic  # every JSON payload names its schema
        for key, value in _items(body):
            name = key.rsplit(".", 1)[-1]
            if isinstance(value, str) and TIME.match(value):
                assert name.endswith("_at"), f"{topic}: a time in {key}"
            if name in enums and not (topic.endswith("/status") and name == "reason"):  # status: free text
                for word in value if isinstance(value, list) else [value]:
                    assert word is None or SNAKE.match(word), f"{topic}: {key} = {word!r}"
            if name in ("sha256", "model_sha256"):
                assert value == SHA, f"{topic}: {key} is not the whole hash"
            if name in ("inference_ms", "frame_age_ms") and isinstance(value, dict):
                assert list(value) == ["p50", "p95", "p99"], f"{topic}: {key}"


def test_the_previous_form_differs_by_the_documented_renames_only() -> None:
    diffs = []
    for topic, payload in _messages(CURRENT):
        a = json.loads(payload)
        b = previous(a)  # what LINEWATCH_MQTT__PAYLOADS=0.1 encodes (validated above against 0.1's schemas)
        for key in sorted(set(a) | set(b)):
            if key.endswith("_at") or key == "at" or a.get(key) == b.get(key):
                continue
            diffs.append((topic.rsplit("/", 1)[-1], key, a.get(key), b.get(key)))
        # the one renamed time: an event's commit (0.1: published_at), a live message's publication (0.1: at)
        new_name, old_name = (("committed_at", "published_at") if a["schema"] in (
            "linewatch.defect/3", "linewatch.verdict/2", "linewatch.frame_defects/1") else ("published_at", "at"))
        assert a.get(new_name) == b.get(old_name) and new_name not in b and old_name not in a, topic
    schema_changes = {(t, x, y) for t, k, x, y in diffs if k == "schema"}
    assert schema_changes == {("defects", "linewatch.defect/3", "linewatch.defect/2"),
                              ("defects", "linewatch.frame_defects/1", "linewatch.defect/1"),
                              ("verdicts", "linewatch.verdict/2", "linewatch.verdict/1"),
                              ("stats", "linewatch.stats/2", "linewatch.stats/1"),
                              ("status", "linewatch.status/2", None),
                              ("availability", "linewatch.availability/2", None)}
    rest = [(t, k, x, y) for t, k, x, y in diffs if k != "schema"]
    assert ("defects", "end_reason", "end_of_stream", "end of stream") in rest
    assert ("defects", "end_reason", "resolution_change", "resolution change") in rest
    assert ("availability", "reason", "connection_lost", "connection lost (last will)") in rest
    assert ("stats", "inference_ms", {"p50": 12.1, "p95": 20.4, "p99": 31.0}, {"p50": 12.1, "p95": 20.4}) in rest
    assert ("stats", "frame_age_ms", {"p50": 30.2, "p95": 48.0, "p99": 61.7}, {"p50": 30.2, "p99": 61.7}) in rest
    assert ("status", "degraded", ["outbox_disk_full", "dead_letters"], [
        "outbox disk full: the oldest stored events give way to the newest",
        "2 events refused by the broker for good, kept as dead letters (linewatch dead-letters)"]) in rest
    assert ("status", "fingerprint", FINGERPRINT, {**FINGERPRINT, "model_sha256": SHA[:16]}) in rest
    assert {k for _, k, _, _ in rest} == {"end_reason", "reason", "inference_ms", "frame_age_ms", "degraded",
                                          "fingerprint"}


def test_a_payload_without_a_previous_form_is_refused_not_sent_half_converted() -> None:
    with pytest.raises(ValueError, match="no previous form"):
        previous({"schema": "linewatch.detections/1"})
