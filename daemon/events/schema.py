"""The payloads: defect events (`linewatch.defect/3`, one per physical defect; `linewatch.frame_defects/1`, one per
frame, in `frames` mode), verdicts (`linewatch.verdict/2`, one per inspection job) and stats (`linewatch.stats/2`).
Documented field by field in docs/mqtt.md; JSON Schemas in `schemas/`; names and versions in daemon/payloads.py,
which also renders linewatch 0.1's forms (`LINEWATCH_MQTT__PAYLOADS=0.1`).

A payload is rendered exactly once, when the event is committed to the outbox, so a re-delivery after a
broker outage or a restart is byte-identical to the first try and subscribers can deduplicate on event_id.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from daemon import __version__
from daemon.events.jobs import JobResult
from daemon.events.tracking import DefectView
from daemon.frames import BBox, DefectEvent, ModelInfo, rfc3339, utc_now
from daemon.payloads import CURRENT, DEFECT, FRAME_DEFECTS, STATS, VERDICT, Release, encode


def _box(box: BBox) -> dict[str, float]:
    return {"x1": box.x1, "y1": box.y1, "x2": box.x2, "y2": box.y2}


def render_defect(
    defect: DefectView, *, event_id: str, camera_id: str, model: ModelInfo, width: int, height: int, seq: int,
    committed_at: dt.datetime, total_ms: float, snapshot: dict[str, Any] | None, release: Release = CURRENT,
) -> bytes:
    """One `new` or `end` message for one physical defect. The fields describe its best view so far."""
    best = defect.best
    payload: dict[str, Any] = {
        "schema": DEFECT,
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
        "end_reason": defect.end_reason.value if defect.end_reason is not None else None,
        "snapshot": snapshot,
        "image": {"width": width, "height": height},
        "model": {"name": model.name, "sha256": model.sha256},
        "latency_ms": {"inference": round(best.inference_ms, 1), "total": round(total_ms, 1)},
        "committed_at": rfc3339(committed_at),
        "linewatch_version": __version__,
    }
    return encode(payload, release)


def render_stats(camera_id: str, interval_s: float, figures: dict[str, Any], release: Release = CURRENT) -> bytes:
    """Rendered on the MQTT thread as it publishes them: `published_at` is the moment they are handed over."""
    payload = {"schema": STATS, "camera_id": camera_id, "published_at": rfc3339(utc_now()),
               "interval_s": interval_s, **figures}
    return encode(payload, release)


def render_frame_defects(event: DefectEvent, seq: int, committed_at: dt.datetime, total_ms: float,
                         release: Release = CURRENT) -> bytes:
    payload = {
        "schema": FRAME_DEFECTS,
        "event_id": event.event_id,
        "camera_id": event.camera_id,
        "seq": seq,
        "frame_seq": event.frame_seq,
        "captured_at": rfc3339(event.captured_utc),
        "committed_at": rfc3339(committed_at),
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
    return encode(payload, release)


def render_verdict(result: JobResult, *, seq: int, model: ModelInfo, committed_at: dt.datetime,
                   snapshot: dict[str, Any] | None = None, release: Release = CURRENT) -> bytes:
    """One inspection job's verdict (`linewatch.verdict/2`): pass, ng or unknown, why, and what was found."""
    trigger = result.trigger
    payload: dict[str, Any] = {
        "schema": VERDICT,
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
        "committed_at": rfc3339(committed_at),
        "linewatch_version": __version__,
    }
    return encode(payload, release)
