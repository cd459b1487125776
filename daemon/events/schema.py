"""The defect event payload (JSON, schema `linewatch.defect/1`). Documented field by field in the README.

A payload is rendered exactly once, when the event is committed to the outbox, so a re-delivery after a
broker outage or a restart is byte-identical to the first try and subscribers can deduplicate on event_id.
"""

from __future__ import annotations

import datetime as dt
import json

from daemon import __version__
from daemon.frames import DefectEvent, rfc3339

SCHEMA = "linewatch.defect/1"


def defect_topic(prefix: str, camera_id: str) -> str:
    return f"{prefix}/{camera_id}/defects"


def status_topic(prefix: str, camera_id: str) -> str:
    return f"{prefix}/{camera_id}/status"


def render_defect(event: DefectEvent, seq: int, published_at: dt.datetime, total_ms: float) -> bytes:
    payload = {
        "schema": SCHEMA,
        "event_id": event.event_id,
        "camera_id": event.camera_id,
        "seq": seq,
        "frame_seq": event.frame_seq,
        "captured_at": rfc3339(event.captured_utc),
        "published_at": rfc3339(published_at),
        "image": {"width": event.width, "height": event.height},
        "model": {"name": event.model.name, "sha256": event.model.sha256},
        "detections": [
            {
                "label": d.label,
                "class_id": d.class_id,
                "confidence": d.confidence,
                "bbox": {"x1": d.bbox.x1, "y1": d.bbox.y1, "x2": d.bbox.x2, "y2": d.bbox.y2},
            }
            for d in event.detections
        ],
        "latency_ms": {"inference": round(event.inference_ms, 1), "total": round(total_ms, 1)},
        "linewatch_version": __version__,
    }
    return json.dumps(payload, separators=(",", ":")).encode()
