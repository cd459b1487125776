"""Checks of the documented defect payload, shared by the integration tests."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

from daemon.events.schema import SCHEMA

FIELDS = {"schema", "event_id", "camera_id", "seq", "frame_seq", "captured_at", "published_at", "image", "model",
          "detections", "latency_ms", "linewatch_version"}
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def parse_time(text: str) -> dt.datetime:
    assert RFC3339_UTC.match(text), f"not RFC 3339 UTC: {text}"
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def assert_valid_defect_event(event: dict[str, Any], *, camera_id: str, model_sha256: str, width: int,
                              height: int, labels: set[str]) -> None:
    assert set(event) == FIELDS, f"fields differ from the documented set: {set(event) ^ FIELDS}"
    assert event["schema"] == SCHEMA
    assert uuid.UUID(event["event_id"]).version == 4
    assert event["camera_id"] == camera_id
    assert isinstance(event["seq"], int) and event["seq"] >= 1
    assert isinstance(event["frame_seq"], int) and event["frame_seq"] >= 0
    captured, published = parse_time(event["captured_at"]), parse_time(event["published_at"])
    assert captured <= published
    assert (published - captured).total_seconds() < 60
    assert event["image"] == {"width": width, "height": height}
    assert event["model"]["sha256"] == model_sha256
    assert event["model"]["name"]
    assert event["detections"], "an event without detections"
    for detection in event["detections"]:
        assert detection["label"] in labels
        assert isinstance(detection["class_id"], int)
        assert 0.0 < detection["confidence"] <= 1.0
        box = detection["bbox"]
        assert -1 <= box["x1"] < box["x2"] <= width + 1, box
        assert -1 <= box["y1"] < box["y2"] <= height + 1, box
    latency = event["latency_ms"]
    assert 0 < latency["inference"] <= latency["total"] < 60_000


def assert_gapless(seqs: list[int]) -> None:
    assert sorted(seqs) == list(range(1, len(seqs) + 1)), f"seq not 1..N without gaps: {sorted(seqs)}"
