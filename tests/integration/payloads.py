"""Checks of the documented payloads, shared by the integration tests: each message against the JSON Schema in
`schemas/` that its topic and `schema` field name, then what a schema cannot say (times, sizes, labels)."""

from __future__ import annotations

import datetime as dt
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from daemon.payloads import DEFECT, FRAME_DEFECTS

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
# every payload's `schema` (this release's and, for LINEWATCH_MQTT__PAYLOADS=0.1, the previous one's) → its file
_BY_SCHEMA = {"linewatch.defect/3": "defect-v3", "linewatch.frame_defects/1": "frame-defects-v1",
              "linewatch.verdict/2": "verdict-v2", "linewatch.stats/2": "stats-v2", "linewatch.status/2": "status-v2",
              "linewatch.availability/2": "availability-v2",
              "linewatch.defect/2": "defect-v2", "linewatch.defect/1": "defect-v1", "linewatch.verdict/1": "verdict-v1",
              "linewatch.stats/1": "stats-v1"}
_UNNAMED = {"status": "status-v1", "availability": "availability-v1"}  # 0.1's status and availability named none


@cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def validate_message(topic: str, payload: bytes) -> str:
    """Validate one published message by its topic; returns the schema it was checked against."""
    if "/snapshots/" in topic:
        assert payload[:3] == b"\xff\xd8\xff", f"{topic}: not a JPEG"
        return "jpeg"
    body = json.loads(payload)
    if "schema" in body:
        name = _BY_SCHEMA.get(body["schema"], "unknown")
    else:
        name = _UNNAMED.get(topic.rsplit("/", 1)[-1], "unknown")
    assert name != "unknown", f"{topic}: no schema for {body.get('schema')!r}"
    errors = sorted(validator(name).iter_errors(body), key=str)
    assert not errors, f"{topic} does not validate against {name}: {[e.message for e in errors[:3]]}\n{body}"
    return name


def parse_time(text: str) -> dt.datetime:
    assert RFC3339_UTC.match(text), f"not RFC 3339 UTC: {text}"
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def assert_valid_defect_event(event: dict[str, Any], *, camera_id: str, model_sha256: str, width: int,
                              height: int, labels: set[str]) -> None:
    validate_message(f"linewatch/{camera_id}/defects", json.dumps(event).encode())
    assert event["camera_id"] == camera_id
    assert event["image"] == {"width": width, "height": height}
    assert event["model"]["sha256"] == model_sha256
    captured, committed = parse_time(event["captured_at"]), parse_time(event["committed_at"])
    assert captured <= committed and (committed - captured).total_seconds() < 60
    per_frame = event["schema"] == FRAME_DEFECTS
    boxes = [d["bbox"] for d in event["detections"]] if per_frame else [event["bbox"]]
    found = {d["label"] for d in event["detections"]} if per_frame else {event["label"]}
    assert found <= labels
    for box in boxes:
        assert -1 <= box["x1"] < box["x2"] <= width + 1, box
        assert -1 <= box["y1"] < box["y2"] <= height + 1, box
    if event["schema"] == DEFECT:
        first, last = parse_time(event["first_seen_at"]), parse_time(event["last_seen_at"])
        assert first <= captured <= last
        assert event["first_frame_seq"] <= event["frame_seq"] <= event["last_frame_seq"]
    latency = event["latency_ms"]
    assert latency["inference"] > 0 and latency["total"] < 60_000


def assert_gapless(seqs: list[int]) -> None:
    assert sorted(seqs) == list(range(1, len(seqs) + 1)), f"seq not 1..N without gaps: {sorted(seqs)}"
