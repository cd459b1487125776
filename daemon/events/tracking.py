"""One event per physical defect: a real tracker (ByteTrack as Ultralytics' BYTETracker runs it, done for all
tracks at once: bytetrack.py; one per camera) and a lifecycle.

Every detection above the model's floor keeps a track alive (ByteTrack's second association is made for weak
detections); a track becomes a defect (`new`) when it had a *strong* sighting (at or above its class's
threshold) in at least K of the last M inspected frames (a detector slower than the camera inspects only some)
and was seen for at least its class's minimum track length; it ends (`end`) when unseen for `lost_frames` of
the camera's frames. Frames the live hand-off skipped
still count: the tracker is stepped once per missing frame sequence number, so its motion model and its
lost-frame count follow the camera's frames, not the detector's pace.

`model.track(persist=True)` is not used: it ties tracker state to the model's predictor, which serves every
camera.
"""

from __future__ import annotations

import collections
import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from daemon.events.bytetrack import ByteTrack
from daemon.frames import BBox, Detection, EndReason, Frame, Image

_MAX_GAP_STEPS = 1000  # beyond this many skipped frames every track is lost anyway
_BUFFER = 1.0  # association boxes grow by this fraction of their longest side on each side
_STEPS = 8  # inspected frames over which the longest step between two of them is remembered (see `update`)
TRACK_HIGH, TRACK_LOW, TRACK_NEW, MATCH_COST = 0.01, 0.001, 0.01, 0.8  # ByteTrack's thresholds (see DefectTracker)


@dataclass(frozen=True, slots=True)
class Observation:
    frame_seq: int
    captured_utc: dt.datetime
    captured_mono: float
    label: str
    class_id: int
    confidence: float
    bbox: BBox
    inference_ms: float
    image: Image | None = field(default=None, repr=False, compare=False)  # kept for the best view only


@dataclass
class _Track:
    track_id: int
    defect_id: str
    first: Observation
    last: Observation
    best: Observation
    frames_seen: int = 1
    seen: collections.deque[int] = field(default_factory=collections.deque)  # inspected frames, strong sightings
    last_tick: int = 0
    confirmed: bool = False


@dataclass(frozen=True, slots=True)
class DefectView:
    """A track as it stands when it becomes a defect or ends: what the payload and the snapshot need."""

    kind: str  # "new" | "end"
    defect_id: str
    track_id: int
    first: Observation
    last: Observation
    best: Observation
    frames_seen: int
    end_reason: EndReason | None = None  # in an end


def association_boxes(detections: tuple[Detection, ...], reach: float = 0.0) -> npt.NDArray[np.float32]:
    """Boxes (centre x, y, width, height) enlarged for association only (buffered IoU, as in C-BIoU tracking): a
    small defect on a conveyor moves a large part of its own width between frames (a 15 px scratch at 8 px per
    frame overlaps its last position with IoU 0.3, under ByteTrack's 0.7 cost limit for new tracks once the score
    is fused in), and three times that when the detector inspects only every third frame. Each side grows by the
    box's longest side, or by twice `reach` (how far the line moved since the last inspected frame) where that is
    more: a 12 px defect of a 5 MP camera at 40 px per frame would otherwise never overlap its last position
    (grown by 2x its motion d, two views overlap with IoU (s + 3d) / (s + 5d) >= 0.6). The reported boxes are the
    model's own."""
    boxes = [(d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2) for d in detections]
    xyxy = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    wh = xyxy[:, 2:] - xyxy[:, :2]
    grow = 2 * np.maximum(_BUFFER * wh.max(axis=1, keepdims=True), 2 * reach)
    return np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, wh + grow], axis=1)


class DefectTracker:
    def __init__(self, *, confirm_hits: int, confirm_window: int, lost_frames: int,
                 min_track_frames: Callable[[int], int], live: bool = True, motion_px: float = 0.0) -> None:
        # Every detection that reaches the tracker is above the model's floor and passed the rules, so all are
        # "high" for ByteTrack: a new track may start from any, and an unconfirmed one survives a weak frame.
        # Whether a sighting counts is decided by `strong` (K of M). IoU matching as in Ultralytics' bytetrack.yaml.
        self._tracker = ByteTrack(high=TRACK_HIGH, low=TRACK_LOW, new=TRACK_NEW, buffer=lost_frames,
                                  match=MATCH_COST)
        self._confirm_hits = confirm_hits
        self._confirm_window = confirm_window
        self._lost_frames = lost_frames
        self._min_track_frames = min_track_frames
        self._live = live  # capture times are physical only for a live camera; a file is read in bursts
        self._motion_px = motion_px  # the line's motion between two of the camera's frames, in pixels
        self._steps: collections.deque[int] = collections.deque(maxlen=_STEPS)  # camera frames per inspected one
        self._tracks: dict[int, _Track] = {}
        self._last_seq: int | None = None
        self._last_mono: float | None = None
        self._interval: float | None = None  # the camera's usual frame interval, learnt (EWMA)
        self._tick = 0  # frames of the camera so far, inspected or not
        self._inspected = 0

    @property
    def open_tracks(self) -> int:
        return len(self._tracks)

    def update(self, frame: Frame, detections: tuple[Detection, ...], inference_ms: float,
               strong: Callable[[Detection], bool]) -> list[DefectView]:
        """Feed one inspected frame; returns the defects that became confirmed (`new`) or ended (`end`)."""
        missed = self._missed_frames(frame)
        if missed:
            self._skip(missed)
        self._tick += missed + 1  # the camera's frames, inspected or not: what the lost limit counts
        self._inspected += 1  # the frames the model saw: what K-of-M counts (a slow detector skips the rest)
        tracker = self._tracker
        # The association reaches as far as the line moved over the longest recent step, so that a track's box
        # (grown at its last frame) and this frame's boxes are grown alike when the detector's pace varies.
        self._steps.append(missed + 1)
        reach = self._motion_px * max(self._steps)
        tracker.update(association_boxes(detections, reach), np.array([d.confidence for d in detections], np.float32),
                       np.array([d.class_id for d in detections], np.float32))
        changes: list[DefectView] = []
        # Every track matched in this frame, the ones ByteTrack has not activated yet included (they become
        # defects only once confirmed here, but their first sighting counts).
        for strack in tracker.tracked:
            if strack.frame_id != tracker.frame_id:
                continue
            detection = detections[int(strack.idx)]
            seen = Observation(frame.seq, frame.captured_utc, frame.captured_mono, detection.label,
                               detection.class_id, detection.confidence, detection.bbox, inference_ms)
            track = self._see(int(strack.track_id), seen, frame, strong(detection))
            if not track.confirmed and self._ripe(track):
                track.confirmed = True
                changes.append(self._view("new", track))
        for track_id, track in list(self._tracks.items()):
            if self._tick - track.last_tick > self._lost_frames:
                del self._tracks[track_id]
                if track.confirmed:
                    changes.append(self._view("end", track, EndReason.GONE))
        return changes

    def _skip(self, frames: int) -> None:
        """Let `frames` of the camera pass unseen: the tracker's clock advances and its Kalman filter predicts
        the confirmed and lost tracks forward, as ByteTrack's update does each frame, but no association runs,
        so a track started a frame ago is not dropped for frames the detector never looked at."""
        self._tracker.predict_ahead(frames)

    def _missed_frames(self, frame: Frame) -> int:
        """Frames between the last inspected one and this one, by sequence number and by capture time.

        The live hand-off skips frames (a gap in seq); a camera outage does not (the capture numbers the frames
        it reads) but shows, on a live camera, as a gap in capture time far beyond its usual frame interval."""
        if self._last_seq is None or self._last_mono is None:
            missed = 0
        else:
            by_seq = max(0, frame.seq - self._last_seq - 1)
            elapsed = frame.captured_mono - self._last_mono
            by_time = 0
            if not self._live:
                pass
            elif self._interval and elapsed > 3 * self._interval * (by_seq + 1):
                by_time = int(elapsed / self._interval) - 1
            elif by_seq == 0 and elapsed > 0:  # learn the camera's frame interval from neighbours
                self._interval = elapsed if self._interval is None else 0.9 * self._interval + 0.1 * elapsed
            missed = min(max(by_seq, by_time), _MAX_GAP_STEPS)
        self._last_seq, self._last_mono = frame.seq, frame.captured_mono
        return missed

    def close(self, reason: EndReason) -> list[DefectView]:
        """End every confirmed open track (end of stream, shutdown)."""
        ended = [self._view("end", t, reason) for t in self._tracks.values() if t.confirmed]
        self._tracks.clear()
        return ended

    def _see(self, track_id: int, seen: Observation, frame: Frame, strong: bool) -> _Track:
        track = self._tracks.get(track_id)
        if track is None:
            best = _with_image(seen, frame.image)
            track = self._tracks[track_id] = _Track(track_id, str(uuid.uuid4()), seen, seen, best)
        else:
            track.last = seen
            track.frames_seen += 1
            if seen.confidence > track.best.confidence:
                track.best = _with_image(seen, frame.image)
        track.last_tick = self._tick
        if strong:
            track.seen.append(self._inspected)
        while track.seen and track.seen[0] <= self._inspected - self._confirm_window:
            track.seen.popleft()
        return track

    def _ripe(self, track: _Track) -> bool:
        return (len(track.seen) >= self._confirm_hits
                and track.frames_seen >= self._min_track_frames(track.best.class_id))

    @staticmethod
    def _view(kind: str, track: _Track, reason: EndReason | None = None) -> DefectView:
        return DefectView(kind, track.defect_id, track.track_id, track.first, track.last, track.best,
                          track.frames_seen, reason)


def _with_image(seen: Observation, image: Image) -> Observation:
    return Observation(seen.frame_seq, seen.captured_utc, seen.captured_mono, seen.label, seen.class_id,
                       seen.confidence, seen.bbox, seen.inference_ms, image)
