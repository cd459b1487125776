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

from daemon.events.schema import SCHEMA, SCHEMA_V2, VERDICT_SCHEMA

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
_BY_SCHEMA = {SCHEMA: "defect-v1", SCHEMA_V2: "defect-v2", "linewatch.stats/1": "stats",
              VERDICT_SCHEMA: "verdict-v1"}


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
    by_topic = {"status": "status", "availability": "availability"}.get(topic.rsplit("/", 1)[-1])
    name = by_topic or _BY_SCHEMA.get(body.get("schema", ""), "unknown")
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
    captured, published = parse_time(event["captured_at"]), parse_time(event["published_at"])
    assert captured <= published and (published - captured).total_seconds() < 60
    boxes = [d["bbox"] for d in event["detections"]] if event["schema"] == SCHEMA else [event["bbox"]]
    found = {d["label"] for d in event["detections"]} if event["schema"] == SCHEMA else {event["label"]}
    assert found <= labels
    for box in boxes:
        assert -1 <= box["x1"] < box["x2"] <= width + 1, box
        assert -1 <= box["y1"] < box["y2"] <= height + 1, box
    if event["schema"] == SCHEMA_V2:
        first, last = parse_time(event["first_seen_at"]), parse_time(event["last_seen_at"])
        assert first <= captured <= last
        assert event["first_frame_seq"] <= event["frame_seq"] <= event["last_frame_seq"]
    latency = event["latency_ms"]
    assert latency["inference"] > 0 and latency["total"] < 60_000


def assert_gapless(seqs: list[int]) -> None:
    assert sorted(seqs) == list(range(1, len(seqs) + 1)), f"seq not 1..N without gaps: {sorted(seqs)}"
