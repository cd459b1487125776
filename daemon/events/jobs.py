"""Inspection jobs: one part's inspection and its verdict, PASS / NG / UNKNOWN, that fails safe.

A job starts from a trigger (the PLC, an MQTT command, an HTTP POST, or a photo-eye that comes with a frame) and
covers the camera's next `frames` frames from the trigger on, or every frame captured within `window_ms` of it.
Its verdict:

- **ng** when a defect class was seen, at `min_confidence` or above and inside the inspection region, in at least
  `confirm_hits` frames of the window (at once: a reject needs no more evidence, and rejecting is the safe side);
- **pass** only when every frame of the window was inspected, on time (`max_frame_age_ms` from capture to the
  verdict's evidence), by a ready model, and nothing was confirmed;
- **unknown** otherwise, with the reasons: the camera stale (no frame by the deadline) or reconnecting, the model
  not ready, frames dropped (a gap in the camera's frame numbers beyond `max_dropped_frames`), a frame late, the job
  timed out, too many jobs open at once (trigger overrun), the daemon stopping, a hardware-triggered camera's frame
  missing. Never pass by default.

Where the window starts: at a photo-eye's own frame; at the frame a software-triggered camera says it exposed for the
job (`bind`: exact); for a hardware-triggered camera (`match_ms`), at the first frame exposed within `match_ms` of the
trigger that no earlier job took (matched by time and count); else at the first frame captured after the trigger.

The words follow OPC 40001-101 (Machinery Result, `ResultEvaluation`): pass = OK, ng = NotOK, unknown = NotDecidable.
This module is pure (no threads, no clock of its own): job_stage.py feeds it.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from dataclasses import dataclass, field

from daemon.frames import BBox, Detection, Image
from daemon.settings.jobs import JobsSettings, parse_roi


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
    FRAME_MISSING = "frame_missing"


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
    min_confidence: float = 0.4  # a sighting counts from this confidence (the same class in several frames confirms)
    timeout_ms: float = 2000.0  # trigger to verdict, at most: then unknown
    max_frame_age_ms: float = 1000.0  # capture to inspection, at most, for a frame to count as on time
    max_dropped_frames: int = 0  # frames of the window the detector may skip before the verdict is unknown
    roi: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)  # x1, y1, x2, y2 as fractions of the frame
    match_ms: float = 0.0  # hardware trigger: the window's first frame is exposed within this time of the trigger

    @classmethod
    def of(cls, settings: JobsSettings, match_ms: float = 0.0) -> JobRules:
        """A camera's rules from its LINEWATCH_JOBS__* settings (and, for a hardware trigger, its match time)."""
        return cls(frames=settings.frames, window_ms=settings.window_ms, confirm_hits=settings.confirm_hits,
                   min_confidence=settings.min_confidence, timeout_ms=settings.timeout_ms,
                   max_frame_age_ms=settings.max_frame_age_ms, max_dropped_frames=settings.max_dropped_frames,
                   roi=parse_roi(settings.roi), match_ms=match_ms)


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
    detections: tuple[Detection, ...]  # after the rules' class, area and region filters; every confidence
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
    """One job's window and what was seen in it. `observe` takes every inspected frame of the camera (in order); the
    window starts at the photo-eye's frame, or at the first frame captured after a PLC's trigger, and is over at its
    last frame or at the first inspected frame past it. Frames of the window the detector skipped are counted, at its
    head, inside it and at its tail."""

    trigger: Trigger
    rules: JobRules
    bind_only: bool = False  # software trigger: the window starts at the frame the camera names (bind), only there
    start_seq: int | None = None  # the window's first frame, where known before it is seen
    reasons: set[Why] = field(default_factory=set)
    first_seq: int | None = None  # the window's first frame (inspected or not)
    last_seq: int | None = None  # the last inspected frame of the window
    inspected: int = 0
    dropped: int = 0
    over: bool = False  # the whole window has been seen (or counted as skipped)
    sightings: dict[int, list[Finding]] = field(default_factory=dict)  # class id -> one per frame

    def __post_init__(self) -> None:
        if self.start_seq is None:
            self.start_seq = self.trigger.frame_seq

    def bind(self, frame_seq: int) -> None:
        """The camera exposed the window's first frame as `frame_seq` (software trigger)."""
        if self.first_seq is None:
            self.start_seq = frame_seq

    @property
    def waiting_for_match(self) -> bool:
        """A hardware-triggered job whose frame has not been matched yet."""
        return bool(self.rules.match_ms) and self.first_seq is None and self.start_seq is None

    @property
    def deadline(self) -> float:
        return self.trigger.at_mono + self.rules.timeout_ms / 1000.0

    @property
    def _window_end_mono(self) -> float:
        return self.trigger.at_mono + self.rules.window_ms / 1000.0

    def observe(self, look: Look, previous: tuple[int, float] | None, taken: bool = False) -> bool:
        """An inspected frame of the camera, any: before the window (ignored), in it (seen), past it (the window is
        over). `previous`: the (seq, capture time) of the inspected frame before it, to place the frames the detector
        skipped in between. `taken`: an earlier job's window holds this frame (a hardware-triggered job does not
        start on it). True when the frame is in this job's window."""
        if self.over or not self._starts(look, previous, taken):
            return False
        assert self.first_seq is not None
        if self.rules.frames:
            end = self.first_seq + self.rules.frames - 1
            seen = look.frame_seq <= end
            if seen:
                self._see(look)
            if look.frame_seq >= end:
                self.over = True
                self.dropped = self.rules.frames - self.inspected  # every frame of the window not inspected
            return seen
        if look.captured_mono <= self._window_end_mono:
            if self.last_seq is None:
                self.dropped += look.frame_seq - self.first_seq
            else:
                self.dropped += look.frame_seq - self.last_seq - 1
            self._see(look)
            return True
        # past a time window: the frames skipped before this one that were still inside it
        low = self.last_seq if self.last_seq is not None else self.first_seq - 1
        self.dropped += self._skipped(look, previous, self.trigger.at_mono, self._window_end_mono, low)
        self.over = True
        return False

    def _starts(self, look: Look, previous: tuple[int, float] | None, taken: bool) -> bool:
        """Whether the window has begun by this frame (setting first_seq where it begins now)."""
        if self.first_seq is not None:
            return True
        if self.start_seq is not None:
            if look.frame_seq < self.start_seq:
                return False
            self.first_seq = self.start_seq
        elif self.bind_only:
            return False  # the camera has not exposed this job's frame yet
        elif self.rules.match_ms:
            match_s = self.rules.match_ms / 1000.0
            if taken or look.captured_mono < self.trigger.at_mono - match_s:
                return False  # another part's frame
            if look.captured_mono > self.trigger.at_mono + match_s:
                self.over = True  # the next frame is already past: this part's never came
                self.reasons.add(Why.FRAME_MISSING)
                return False
            self.first_seq = look.frame_seq
        else:
            if look.captured_mono < self.trigger.at_mono:
                return False  # captured before the trigger: not this part's
            self.first_seq = look.frame_seq - self._skipped(look, previous, self.trigger.at_mono, float("inf"))
        return True

    def _see(self, look: Look) -> None:
        self.last_seq = look.frame_seq
        self.inspected += 1
        if (look.inspected_mono - look.captured_mono) * 1000.0 > self.rules.max_frame_age_ms:
            self.reasons.add(Why.FRAME_LATE)
        best: dict[int, Detection] = {}
        for detection in look.detections:
            if detection.confidence < self.rules.min_confidence:
                continue
            if self._inside(detection.bbox, look.width, look.height) and (
                    detection.class_id not in best or detection.confidence > best[detection.class_id].confidence):
                best[detection.class_id] = detection
        for class_id, detection in best.items():
            self.sightings.setdefault(class_id, []).append(
                Finding(detection.label, class_id, detection.confidence, detection.bbox, look.frame_seq, 1, look.image))

    @staticmethod
    def _skipped(look: Look, previous: tuple[int, float] | None, after: float, until: float,
                 low: int | None = None) -> int:
        """Frames between `previous` (or `low`) and `look` that the detector skipped and whose capture time, placed
        between the two inspected frames' own, falls within [after, until]."""
        if previous is None:
            return 0 if low is None else max(0, look.frame_seq - low - 1)  # nothing to place them by: count all
        prev_seq, prev_mono = previous
        if look.frame_seq - prev_seq < 2:
            return 0
        step = (look.captured_mono - prev_mono) / (look.frame_seq - prev_seq)
        return sum(1 for k in range(1, look.frame_seq - prev_seq) if after <= prev_mono + k * step <= until)

    def _inside(self, box: BBox, width: int, height: int) -> bool:
        x1, y1, x2, y2 = self.rules.roi
        cx, cy = (box.x1 + box.x2) / 2 / max(1, width), (box.y1 + box.y2) / 2 / max(1, height)
        return x1 <= cx <= x2 and y1 <= cy <= y2

    def _needs(self) -> int:
        """Frames a class must be seen in: CONFIRM_HITS, at most the window's frames (a time window's are known once
        it is over)."""
        window = self.rules.frames or (self.inspected + self.dropped if self.over else self.rules.confirm_hits)
        return max(1, min(self.rules.confirm_hits, window))

    def findings(self) -> tuple[Finding, ...]:
        needs = self._needs()
        found = []
        for seen in self.sightings.values():
            if len(seen) >= needs:
                top = max(seen, key=lambda f: f.confidence)
                found.append(Finding(top.label, top.class_id, top.confidence, top.bbox, top.frame_seq, len(seen),
                                     top.image))
        return tuple(sorted(found, key=lambda f: -f.confidence))

    def decide(self, now_mono: float, now_utc: dt.datetime, *, final: Why | None = None) -> JobResult | None:
        """The result, once it is known: NG as soon as a defect is confirmed; else when the window is complete; else
        (final given, a deadline or a failure) unknown with that reason. None while still open."""
        findings = self.findings()
        reasons = set(self.reasons)
        if self.dropped > self.rules.max_dropped_frames:
            reasons.add(Why.FRAMES_DROPPED)
        if self.dropped and any(len(seen) + self.dropped >= self._needs() for seen in self.sightings.values()):
            reasons.add(Why.FRAMES_DROPPED)  # a sighting the skipped frames might have confirmed: not a pass
        if self.over and self.inspected == 0 and Why.FRAME_MISSING not in reasons:
            reasons.add(Why.FRAMES_DROPPED)  # nothing of the window was inspected, whatever the tolerance
        if findings:
            verdict = Verdict.NG
            reasons = set()  # a reject stands whatever else went wrong: it is the safe side
        elif final is not None:
            verdict = Verdict.UNKNOWN
            reasons.add(final)
        elif self.over:
            verdict = Verdict.UNKNOWN if reasons else Verdict.PASS
        else:
            return None
        return JobResult(self.trigger, verdict, tuple(sorted(reasons, key=lambda r: r.value)), findings,
                         self.inspected, self.dropped, self.first_seq, self.last_seq, now_mono, now_utc)
