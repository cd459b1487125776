"""The payloads: defect events (`linewatch.defect/2`, one per physical defect; `linewatch.defect/1`, one per frame,
in `frames` mode), verdicts (`linewatch.verdict/1`, one per inspection job) and stats (`linewatch.stats/1`).
Documented field by field in docs/mqtt.md; JSON Schemas in `schemas/`.

A payload is rendered exactly once, when the event is committed to the outbox, so a re-delivery after a
broker outage or a restart is byte-identical to the first try and subscribers can deduplicate on event_id.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from daemon import __version__
from daemon.events.jobs import JobResult
from daemon.events.tracking import DefectView
from daemon.frames import BBox, DefectEvent, ModelInfo, rfc3339, utc_now

SCHEMA = "linewatch.defect/1"
SCHEMA_V2 = "linewatch.defect/2"
STATS_SCHEMA = "linewatch.stats/1"


def _box(box: BBox) -> dict[str, float]:
    return {"x1": box.x1, "y1": box.y1, "x2": box.x2, "y2": box.y2}


def render_defect_v2(
    defect: DefectView, *, event_id: str, camera_id: str, model: ModelInfo, width: int, height: int, seq: int,
    published_at: dt.datetime, total_ms: float, snapshot: dict[str, Any] | None,
) -> bytes:
    """One `new` or `end` message for one physical defect. The fields describe its best view so far."""
    best = defect.best
    payload: dict[str, Any] = {
        "schema": SCHEMA_V2,
        "type": defect.kind,
        "event_id": event_id,
        "defect_id": defect.defect_id,
        "track_id": defect.track_id,
        "camera_id": camera_id,
        "seq": seq,
        "label": best.label,
        "class_id": best.class_id,
        "confidence": best.confidence,
        "bbox": _box(best.bbox),
        "frame_seq": best.frame_seq,
        "captured_at": rfc3339(best.captured_utc),
        "first_seen_at": rfc3339(defect.first.captured_utc),
        "last_seen_at": rfc3339(defect.last.captured_utc),
        "first_frame_seq": defect.first.frame_seq,
        "last_frame_seq": defect.last.frame_seq,
        "frames_seen": defect.frames_seen,
        "end_reason": defect.end_reason,
        "snapshot": snapshot,
        "image": {"width": width, "height": height},
        "model": {"name": model.name, "sha256": model.sha256},
        "latency_ms": {"inference": round(best.inference_ms, 1), "total": round(total_ms, 1)},
        "published_at": rfc3339(published_at),
        "linewatch_version": __version__,
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def render_stats(camera_id: str, interval_s: float, figures: dict[str, Any]) -> bytes:
    payload = {"schema": STATS_SCHEMA, "camera_id": camera_id, "at": rfc3339(utc_now()), "interval_s": interval_s,
               **figures}
    return json.dumps(payload, separators=(",", ":")).encode()


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
                "bbox": _box(d.bbox),
            }
            for d in event.detections
        ],
        "latency_ms": {"inference": round(event.inference_ms, 1), "total": round(total_ms, 1)},
        "linewatch_version": __version__,
    }
    return json.dumps(payload, separators=(",", ":")).encode()


VERDICT_SCHEMA = "linewatch.verdict/1"


def render_verdict(result: JobResult, *, seq: int, model: ModelInfo, published_at: dt.datetime,
                   snapshot: dict[str, Any] | None = None) -> bytes:
    """One inspection job's verdict (`linewatch.verdict/1`): pass, ng or unknown, why, and what was found."""
    trigger = result.trigger
    payload: dict[str, Any] = {
        "schema": VERDICT_SCHEMA,
        "camera_id": trigger.camera_id,
        "seq": seq,
        "job_id": trigger.job_id,
        "part_id": trigger.part_id,
        "result": result.verdict.value,
        "result_evaluation": result.verdict.evaluation,
        "reasons": [reason.value for reason in result.reasons],
        "trigger_source": trigger.source,
        "triggered_at": rfc3339(trigger.at_utc),
        "decided_at": rfc3339(result.decided_utc),
        "latency_ms": round(result.latency_ms, 1),
        "frames": {"inspected": result.frames_inspected, "dropped": result.frames_dropped,
                   "first_seq": result.first_seq, "last_seq": result.last_seq},
        "defects": [{"label": f.label, "class_id": f.class_id, "confidence": f.confidence, "bbox": _box(f.bbox),
                     "frame_seq": f.frame_seq, "frames": f.frames} for f in result.findings],
        "snapshot": snapshot,
        "model": {"name": model.name, "sha256": model.sha256},
        "published_at": rfc3339(published_at),
        "linewatch_version": __version__,
    }
    return json.dumps(payload, separators=(",", ":")).encode()
