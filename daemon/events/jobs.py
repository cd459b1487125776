"""Inspection jobs: one part's inspection and its verdict, PASS / NG / UNKNOWN, that fails safe.

A job starts from a trigger (the PLC, an MQTT command, an HTTP POST, or a photo-eye that comes with a frame) and
covers the camera's next `frames` frames from the trigger on, or every frame captured within `window_ms` of it.
Its verdict:

- **ng** when a defect class was seen, strong and inside the inspection region, in at least `confirm_hits` frames of
  the window (at once: a reject needs no more evidence, and rejecting is the safe side);
- **pass** only when every frame of the window was inspected, on time (`max_frame_age_ms` from capture to the
  verdict's evidence), by a ready model, and nothing was confirmed;
- **unknown** otherwise, with the reasons: the camera stale (no frame by the deadline) or reconnecting, the model
  not ready, frames dropped (a gap in the camera's frame numbers beyond `max_dropped_frames`), a frame late, the job
  timed out, too many jobs open at once (trigger overrun), the daemon stopping. Never pass by default.

The words follow OPC 40001-101 (Machinery Result, `ResultEvaluation`): pass = OK, ng = NotOK, unknown = NotDecidable.
This module is pure (no threads, no clock of its own): job_stage.py feeds it.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from dataclasses import dataclass, field

from daemon.frames import BBox, Detection, Image


class Verdict(str, enum.Enum):
    PASS = "pass"
    NG = "ng"
    UNKNOWN = "unknown"

    @property
    def evaluation(self) -> str:
        """OPC 40001-101 ResultEvaluation."""
        return {"pass": "OK", "ng": "NotOK", "unknown": "NotDecidable"}[self.value]


class Why(str, enum.Enum):
    """Why a verdict is unknown (snake_case words in the payload)."""

    CAMERA_STALE = "camera_stale"
    CAMERA_RECONNECTING = "camera_reconnecting"
    MODEL_NOT_READY = "model_not_ready"
    FRAMES_DROPPED = "frames_dropped"
    FRAME_LATE = "frame_late"
    TIMEOUT = "timeout"
    TRIGGER_OVERRUN = "trigger_overrun"
    STOPPING = "stopping"


PART_ID_MAX = 64  # characters; Modbus carries a number, OPC UA a string


def clean_part_id(value: object) -> str:
    """A trigger's part id: printable, at most PART_ID_MAX characters, '' for none. ValueError says what is wrong."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError("part_id must be a string or an integer")
    text = str(value).strip()
    if len(text) > PART_ID_MAX or not text.isprintable():
        raise ValueError(f"part_id must be printable and at most {PART_ID_MAX} characters")
    return text


def part_id_from_message(payload: bytes) -> str:
    """The part id of a trigger message: empty, `{"part_id": ...}` or a bare part id. ValueError when it is not."""
    text = payload.decode("utf-8").strip()  # UnicodeDecodeError is a ValueError
    if not text:
        return ""
    if text.startswith("{"):
        body = json.loads(text)
        if not isinstance(body, dict) or set(body) - {"part_id"}:
            raise ValueError('a trigger message is empty, a part id, or {"part_id": "..."}')
        return clean_part_id(body.get("part_id"))
    return clean_part_id(text)


@dataclass(frozen=True, slots=True)
class JobRules:
    """How a job is judged (LINEWATCH_JOBS__*, per camera)."""

    frames: int = 3  # frames from the trigger on (0: use window_ms)
    window_ms: float = 0.0  # or: every frame captured within this time of the trigger
    confirm_hits: int = 2  # frames of the window a class must be seen in (capped at the window's frames)
    timeout_ms: float = 2000.0  # trigger to verdict, at most: then unknown
    max_frame_age_ms: float = 1000.0  # capture to inspection, at most, for a frame to count as on time
    max_dropped_frames: int = 0  # frames of the window the detector may skip before the verdict is unknown
    roi: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)  # x1, y1, x2, y2 as fractions of the frame

    def needs(self) -> int:
        return max(1, min(self.confirm_hits, self.frames)) if self.frames else max(1, self.confirm_hits)


@dataclass(frozen=True, slots=True)
class Trigger:
    camera_id: str
    job_id: str
    part_id: str
    source: str  # plc_modbus | plc_opcua | mqtt | http | photo_eye
    at_mono: float
    at_utc: dt.datetime
    frame_seq: int | None = None  # a photo-eye's trigger names its frame: the window starts there


@dataclass(frozen=True, slots=True)
class Look:
    """One inspected frame, as the event stage hands it on."""

    frame_seq: int
    captured_mono: float
    captured_utc: dt.datetime
    inspected_mono: float
    width: int
    height: int
    detections: tuple[Detection, ...]  # after the rules; only the strong ones
    image: Image | None = field(default=None, repr=False, compare=False)  # the frame, for an ng's snapshot


@dataclass(frozen=True, slots=True)
class Finding:
    label: str
    class_id: int
    confidence: float  # the best sighting's
    bbox: BBox
    frame_seq: int
    frames: int  # frames of the window it was seen in
    image: Image | None = field(default=None, repr=False, compare=False)  # the best sighting's frame


@dataclass(frozen=True, slots=True)
class JobResult:
    trigger: Trigger
    verdict: Verdict
    reasons: tuple[Why, ...]
    findings: tuple[Finding, ...]
    frames_inspected: int
    frames_dropped: int
    first_seq: int | None
    last_seq: int | None
    decided_mono: float
    decided_utc: dt.datetime

    @property
    def latency_ms(self) -> float:
        return (self.decided_mono - self.trigger.at_mono) * 1000.0


@dataclass
class Job:
    trigger: Trigger
    rules: JobRules
    reasons: set[Why] = field(default_factory=set)
    first_seq: int | None = None
    last_seq: int | None = None
    inspected: int = 0
    dropped: int = 0
    sightings: dict[int, list[Finding]] = field(default_factory=dict)  # class id -> one per frame

    @property
    def deadline(self) -> float:
        return self.trigger.at_mono + self.rules.timeout_ms / 1000.0

    def covers(self, look: Look) -> bool:
        """Is this frame in the job's window?"""
        if self.trigger.frame_seq is not None:
            if look.frame_seq < self.trigger.frame_seq:
                return False
        elif look.captured_mono < self.trigger.at_mono:
            return False
        if self.rules.frames:
            start = next((seq for seq in (self.trigger.frame_seq, self.first_seq) if seq is not None), look.frame_seq)
            return look.frame_seq < start + self.rules.frames
        return look.captured_mono <= self.trigger.at_mono + self.rules.window_ms / 1000.0

    def see(self, look: Look, previous: tuple[int, float] | None) -> None:
        """Take one inspected frame of the window. `previous`: the (seq, capture time) of the inspected frame before
        it, for the frames in between that the detector skipped (were they in the window?)."""
        if self.first_seq is None:
            self.first_seq = look.frame_seq
            missed = self._missed_before(look, previous)
            self.first_seq -= missed
            self.dropped += missed
        elif self.last_seq is not None and look.frame_seq > self.last_seq + 1:
            self.dropped += look.frame_seq - self.last_seq - 1  # frames the detector never saw
        self.last_seq = look.frame_seq
        self.inspected += 1
        if (look.inspected_mono - look.captured_mono) * 1000.0 > self.rules.max_frame_age_ms:
            self.reasons.add(Why.FRAME_LATE)
        best: dict[int, Detection] = {}
        for detection in look.detections:
            if self._inside(detection.bbox, look.width, look.height) and (
                    detection.class_id not in best or detection.confidence > best[detection.class_id].confidence):
                best[detection.class_id] = detection
        for class_id, detection in best.items():
            self.sightings.setdefault(class_id, []).append(
                Finding(detection.label, class_id, detection.confidence, detection.bbox, look.frame_seq, 1, look.image))

    def _missed_before(self, look: Look, previous: tuple[int, float] | None) -> int:
        """Frames of the window before its first inspected one: from the photo-eye's frame on; or, after a PLC's
        trigger, the skipped frames whose capture time (between the two inspected frames' own) is after it."""
        if self.trigger.frame_seq is not None:
            return max(0, look.frame_seq - self.trigger.frame_seq)
        if previous is None or look.frame_seq - previous[0] < 2:
            return 0
        prev_seq, prev_mono = previous
        step = (look.captured_mono - prev_mono) / (look.frame_seq - prev_seq)
        return sum(1 for k in range(1, look.frame_seq - prev_seq) if prev_mono + k * step >= self.trigger.at_mono)

    def _inside(self, box: BBox, width: int, height: int) -> bool:
        x1, y1, x2, y2 = self.rules.roi
        cx, cy = (box.x1 + box.x2) / 2 / max(1, width), (box.y1 + box.y2) / 2 / max(1, height)
        return x1 <= cx <= x2 and y1 <= cy <= y2

    def findings(self) -> tuple[Finding, ...]:
        needs = self.rules.needs()
        found = []
        for seen in self.sightings.values():
            if len(seen) >= needs:
                top = max(seen, key=lambda f: f.confidence)
                found.append(Finding(top.label, top.class_id, top.confidence, top.bbox, top.frame_seq, len(seen),
                                     top.image))
        return tuple(sorted(found, key=lambda f: -f.confidence))

    def complete(self, now_mono: float) -> bool:
        """Has the window been seen to its end (by frame count, or by the time window having passed)?"""
        if self.rules.frames:
            return self.first_seq is not None and self.last_seq is not None and (
                self.last_seq >= self.first_seq + self.rules.frames - 1)
        return now_mono > self.trigger.at_mono + self.rules.window_ms / 1000.0 and self.inspected > 0

    def decide(self, now_mono: float, now_utc: dt.datetime, *, final: Why | None = None) -> JobResult | None:
        """The result, once it is known: NG as soon as a defect is confirmed; else when the window is complete; else
        (final given, a deadline or a failure) unknown with that reason. None while still open."""
        findings = self.findings()
        reasons = set(self.reasons)
        if self.dropped > self.rules.max_dropped_frames:
            reasons.add(Why.FRAMES_DROPPED)
        if findings:
            verdict = Verdict.NG
            reasons = set()  # a reject stands whatever else went wrong: it is the safe side
        elif final is not None:
            verdict = Verdict.UNKNOWN
            reasons.add(final)
        elif self.complete(now_mono):
            verdict = Verdict.UNKNOWN if reasons else Verdict.PASS
        else:
            return None
        return JobResult(self.trigger, verdict, tuple(sorted(reasons, key=lambda r: r.value)), findings,
                         self.inspected, self.dropped, self.first_seq, self.last_seq, now_mono, now_utc)
