"""ByteTrack (Zhang et al., ECCV 2022) as Ultralytics' BYTETracker runs it, with the arithmetic done for all tracks at
once.

Ultralytics' BYTETracker (8.4) makes an object per detection and runs each matched track's Kalman update, box conversion
and IoU row one track at a time. This module keeps its algorithm and its numbers (the same two-stage association with
fused scores, the same thresholds, Kalman filter, track states, id order and pool bookkeeping, down to a track dropped
as stale staying one more frame in the lost pool; Ultralytics' IoU formula; its assignment, lap's lapjv with the same
cost limit) and does each step as a few array operations over every track: a detection's corners are worked out once
per frame, the constant-velocity step is two slice additions instead of products with the motion matrix (the same
sums: that matrix only adds velocity to position). On the model's detections of the synthetic line (3.2 per frame, 3.8
tracks open), medians of 5 runs side by side on this project's slowest 2-core machine: Ultralytics 683 us per frame,
this module 372 (its first form, one stack per step and Ultralytics' IoU and assignment wrappers, 507); the whole event
stage spends about twice that, beside a model that costs 25 ms of CPU per frame there (bench/box_limit.py).
tests/events/test_bytetrack.py runs both on the same detections and requires the same tracks, ids and boxes frame by
frame.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
_STD_POSITION = 1.0 / 20  # Ultralytics' KalmanFilterXYAH weights
_STD_VELOCITY = 1.0 / 160
_DIAGONAL = np.arange(8)
_MEASURED = np.arange(4)
_VARIANCE_MEASURED_ASPECT = float(np.square(1e-1))  # Ultralytics' measurement noise for the aspect ratio, squared
_VARIANCE_ASPECT, _VARIANCE_ASPECT_RATE = float(np.square(1e-2)), float(np.square(1e-5))
_DUPLICATE_IOU_COST = 0.15
_SECOND_MATCH = 0.5
_UNCONFIRMED_MATCH = 0.7


class State(enum.IntEnum):
    NEW = 0
    TRACKED = 1
    LOST = 2
    REMOVED = 3


@dataclass(eq=False, slots=True)
class Track:
    track_id: int
    mean: Array
    covariance: Array
    score: float
    cls: float
    idx: int  # the detection it was last matched with, in this frame's numbering
    frame_id: int
    start_frame: int
    state: State = State.TRACKED
    activated: bool = False
    tracklet_len: int = 0


@dataclass(frozen=True, slots=True)
class _Detections:
    tlwh: npt.NDArray[np.float32]  # as Ultralytics' STrack keeps a detection: float32 top-left, width, height
    xyah: npt.NDArray[np.float32]  # the Kalman filter's measurement: centre x, y, aspect ratio, height
    score: npt.NDArray[np.float32]
    cls: npt.NDArray[np.float32]
    idx: npt.NDArray[np.intp]
    xyxy: npt.NDArray[np.float32]  # corners, as Ultralytics' IoU takes a detection's box (STrack.xyxy)

    def __len__(self) -> int:
        return len(self.idx)

    def take(self, rows: list[int] | npt.NDArray[np.intp]) -> _Detections:
        rows = np.asarray(rows, dtype=np.intp)
        return _Detections(self.tlwh[rows], self.xyah[rows], self.score[rows], self.cls[rows], self.idx[rows],
                           self.xyxy[rows])


@dataclass
class ByteTrack:
    high: float  # track_high_thresh: first association
    low: float  # track_low_thresh: second association between low and high
    new: float  # new_track_thresh
    buffer: int  # track_buffer: frames a lost track is kept
    match: float  # match_thresh: the first association's cost limit
    fuse_score: bool = True
    removed_kept: int = 32  # the removed tracks remembered (a lost one is dropped from the pool once in here)
    frame_id: int = 0
    tracked: list[Track] = field(default_factory=list)
    lost: list[Track] = field(default_factory=list)
    _removed_ids: list[int] = field(default_factory=list)
    _next_id: int = 1

    def update(self, xywh: npt.NDArray[np.float32], conf: npt.NDArray[np.float32],
               cls: npt.NDArray[np.float32]) -> None:
        """One frame's detections (centre x, y, width, height; confidence; class). Afterwards, `tracked` holds the
        tracks matched or started in this frame with `frame_id` equal to this frame's."""
        self.frame_id += 1
        frame = self.frame_id
        if not len(conf) and not self.tracked and not self.lost:
            # Nothing seen and nothing followed (most frames of a good line): the clock moves, nothing else would.
            # The removed ids stay: a track dropped as stale is already out of the lost pool.
            return
        detections = _detections(xywh, conf, cls)
        wh_ok = (detections.tlwh[:, 2] > 0) & (detections.tlwh[:, 3] > 0)
        high = detections.take(np.flatnonzero(wh_ok & (detections.score >= self.high)))
        low = detections.take(np.flatnonzero(wh_ok & (detections.score > self.low) & (detections.score < self.high)))
        unconfirmed = [t for t in self.tracked if not t.activated]
        pool = _joint([t for t in self.tracked if t.activated], self.lost)
        predicted = predict(pool)
        updates: list[tuple[Track, _Detections, int]] = []  # (track, detections, row): Kalman updates, made at once
        refound: list[Track] = []
        matches, u_track, u_high = _assign(self._costs(pool, high, self.fuse_score, predicted), self.match)
        for t, d in matches:
            updates.append((pool[t], high, d))
        remaining = [pool[t] for t in u_track if pool[t].state is State.TRACKED]
        newly_lost: list[Track] = []
        if remaining and len(low):
            matches, u_second, _ = _assign(self._costs(remaining, low, False), _SECOND_MATCH)
            for t, d in matches:
                updates.append((remaining[t], low, d))
        else:
            u_second = list(range(len(remaining)))
        for t in u_second:
            remaining[t].state = State.LOST
            newly_lost.append(remaining[t])
        high = high.take(u_high)
        matches, u_unconfirmed, u_new = _assign(self._costs(unconfirmed, high, self.fuse_score), _UNCONFIRMED_MATCH)
        for t, d in matches:
            updates.append((unconfirmed[t], high, d))
        removed = [unconfirmed[t] for t in u_unconfirmed]
        for track in removed:
            track.state = State.REMOVED
        for track, source, row in updates:
            if track.state is not State.TRACKED:
                refound.append(track)
                track.tracklet_len = 0
            else:
                track.tracklet_len += 1
            track.state, track.activated, track.frame_id = State.TRACKED, True, frame
            track.score, track.cls, track.idx = float(source.score[row]), float(source.cls[row]), int(source.idx[row])
        _kalman_update([t for t, _, _ in updates], np.array([s.xyah[r] for _, s, r in updates]))
        started = [self._start(high, d, frame) for d in u_new if high.score[d] >= self.new]
        for track in self.lost:
            if frame - track.frame_id > self.buffer:
                track.state = State.REMOVED
                removed.append(track)
        self._merge(started + [t for t, _, _ in updates if t not in refound], refound, newly_lost, removed)

    def predict_ahead(self, frames: int) -> None:
        """Frames of the camera that the detector never saw: the confirmed and lost tracks move on, nothing is
        associated (DefectTracker._skip)."""
        moving = _joint([t for t in self.tracked if t.activated], self.lost)
        for _ in range(frames):
            predict(moving)
        self.frame_id += frames

    def _costs(self, tracks: list[Track], detections: _Detections, fuse: bool,
               means: Array | None = None) -> npt.NDArray[np.float32]:
        """IoU costs between tracks (their Kalman boxes; `means`: theirs stacked, when at hand) and detections."""
        if not tracks or not len(detections):
            return np.zeros((len(tracks), len(detections)), dtype=np.float32)
        boxes = means[:, :4] if means is not None else np.array([t.mean[:4] for t in tracks])
        cost: npt.NDArray[np.float32] = 1 - _iou(_track_xyxy(boxes), detections.xyxy)
        if fuse:
            cost = 1 - (1 - cost) * detections.score[None]
        return cost

    def _start(self, detections: _Detections, row: int, frame: int) -> Track:
        mean, covariance = _initiate(detections.xyah[row])
        track = Track(self._next_id, mean, covariance, float(detections.score[row]), float(detections.cls[row]),
                      int(detections.idx[row]), frame, frame, activated=frame == 1)
        self._next_id += 1
        return track

    def _merge(self, activated: list[Track], refound: list[Track], lost: list[Track], removed: list[Track]) -> None:
        """Ultralytics' merge_track_pools and remove_duplicate_stracks, in their order."""
        tracked = _joint(_joint([t for t in self.tracked if t.state is State.TRACKED], activated), refound)
        tracked_ids = {t.track_id for t in tracked}
        pool_lost = [t for t in self.lost if t.track_id not in tracked_ids] + lost
        gone = set(self._removed_ids)
        pool_lost = [t for t in pool_lost if t.track_id not in gone]
        self.tracked, self.lost = _without_duplicates(tracked, pool_lost)
        self._removed_ids.extend(t.track_id for t in removed)
        del self._removed_ids[:-self.removed_kept]


def _detections(xywh: npt.NDArray[np.float32], conf: npt.NDArray[np.float32],
                cls: npt.NDArray[np.float32]) -> _Detections:
    boxes = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)  # parse_bboxes' concatenate makes float64
    tlwh = boxes.copy()
    tlwh[:, :2] -= boxes[:, 2:] / 2
    tlwh32 = tlwh.astype(np.float32)
    xyxy = tlwh32.copy()
    xyxy[:, 2:] += xyxy[:, :2]
    return _Detections(tlwh32, _xyah(tlwh32), np.asarray(conf, dtype=np.float32), np.asarray(cls, dtype=np.float32),
                       np.arange(len(boxes), dtype=np.intp), xyxy)


def _xyah(tlwh: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    xyah = tlwh.copy()
    xyah[..., :2] += xyah[..., 2:] / 2
    xyah[..., 2] /= xyah[..., 3]
    return xyah


def _track_xyxy(xyah: Array) -> npt.NDArray[np.float32]:
    """From tracks' Kalman boxes (centre x, y, aspect, height) to corners, as Ultralytics' STrack.tlwh then .xyxy,
    float32 as its IoU takes them."""
    tlwh = xyah.copy()
    tlwh[:, 2] *= tlwh[:, 3]
    tlwh[:, :2] -= tlwh[:, 2:] / 2
    tlwh[:, 2:] += tlwh[:, :2]
    return tlwh.astype(np.float32)


def _iou(box1: npt.NDArray[np.float32], box2: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Ultralytics' bbox_ioa(box1, box2, iou=True), the same operations in the same order, without its transposes
    and clip wrappers (a clip at 0 is a maximum with 0, NaN kept alike)."""
    inter = (np.maximum(np.minimum(box1[:, None, 2], box2[:, 2]) - np.maximum(box1[:, None, 0], box2[:, 0]), 0.0)
             * np.maximum(np.minimum(box1[:, None, 3], box2[:, 3]) - np.maximum(box1[:, None, 1], box2[:, 1]), 0.0))
    area = (box2[:, 2] - box2[:, 0]) * (box2[:, 3] - box2[:, 1])
    area = area + ((box1[:, 2] - box1[:, 0]) * (box1[:, 3] - box1[:, 1]))[:, None] - inter
    iou: npt.NDArray[np.float32] = inter / (area + 1e-7)
    return iou


def _assign(cost: npt.NDArray[np.float32], limit: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Ultralytics' linear_assignment with lap: lapjv on the cost matrix extended by the limit."""
    if cost.size == 0:
        return [], list(range(cost.shape[0])), list(range(cost.shape[1]))
    import lap  # type: ignore[import-untyped]  # imported when first needed: the CLI starts without it

    _, x, y = lap.lapjv(cost, extend_cost=True, cost_limit=limit)
    tracks, detections = x.tolist(), y.tolist()
    return ([(t, d) for t, d in enumerate(tracks) if d >= 0], [t for t, d in enumerate(tracks) if d < 0],
            [d for d, t in enumerate(detections) if t < 0])


def _joint(first: list[Track], second: list[Track]) -> list[Track]:
    ids = {t.track_id for t in first}
    return first + [t for t in second if t.track_id not in ids]


def _without_duplicates(tracked: list[Track], lost: list[Track]) -> tuple[list[Track], list[Track]]:
    """A lost track that overlaps a tracked one almost wholly (IoU > 0.85): the younger of the two goes."""
    if not tracked or not lost:
        return tracked, lost
    cost = 1 - _iou(_track_xyxy(np.array([t.mean[:4] for t in tracked])),
                    _track_xyxy(np.array([t.mean[:4] for t in lost])))
    drop_tracked, drop_lost = set(), set()
    for p, q in zip(*np.where(cost < _DUPLICATE_IOU_COST), strict=True):
        if tracked[p].frame_id - tracked[p].start_frame > lost[q].frame_id - lost[q].start_frame:
            drop_lost.add(int(q))
        else:
            drop_tracked.add(int(p))
    return ([t for i, t in enumerate(tracked) if i not in drop_tracked],
            [t for i, t in enumerate(lost) if i not in drop_lost])


def _initiate(xyah: npt.NDArray[np.float32]) -> tuple[Array, Array]:
    measurement = np.asarray(xyah, dtype=np.float64)
    mean = np.r_[measurement, np.zeros_like(measurement)]
    h = measurement[3]
    std = [2 * _STD_POSITION * h, 2 * _STD_POSITION * h, 1e-2, 2 * _STD_POSITION * h,
           10 * _STD_VELOCITY * h, 10 * _STD_VELOCITY * h, 1e-5, 10 * _STD_VELOCITY * h]
    return mean, np.diag(np.square(std))


def predict(tracks: list[Track]) -> Array:
    """Ultralytics' STrack.multi_predict: one step of the constant-velocity model for every track; a track not
    tracked now keeps its position but not its growth in height. Returns the new means, stacked."""
    if not tracks:
        return np.zeros((0, 8))
    mean = np.array([t.mean for t in tracks])
    covariance = np.array([t.covariance for t in tracks])
    for i, track in enumerate(tracks):
        if track.state is not State.TRACKED:
            mean[i][7] = 0
    h = mean[:, 3]
    noise = np.empty_like(mean)  # the process noise's variances (Ultralytics: squares of these deviations)
    noise[:, 0] = noise[:, 1] = noise[:, 3] = np.square(_STD_POSITION * h)
    noise[:, 4] = noise[:, 5] = noise[:, 7] = np.square(_STD_VELOCITY * h)
    noise[:, 2], noise[:, 6] = _VARIANCE_ASPECT, _VARIANCE_ASPECT_RATE
    # F x and F P F^T for the constant-velocity F (identity, velocity added to position): the products' own sums
    moved: Array = mean.copy()
    moved[:, :4] += mean[:, 4:]
    covariance[:, :4] += covariance[:, 4:]
    covariance[:, :, :4] += covariance[:, :, 4:]
    covariance[:, _DIAGONAL, _DIAGONAL] += noise
    for i, track in enumerate(tracks):
        track.mean, track.covariance = moved[i], covariance[i]
    return moved


def _kalman_update(tracks: list[Track], measurements: npt.NDArray[np.float32]) -> None:
    """Ultralytics' KalmanFilterXYAH.update for every matched track at once (the measurement is the first four
    state entries, so projecting is slicing)."""
    if not tracks:
        return
    mean = np.array([t.mean for t in tracks])
    covariance = np.array([t.covariance for t in tracks])
    noise = np.empty((len(tracks), 4))  # the measurement noise's variances
    noise[:, 0] = noise[:, 1] = noise[:, 3] = np.square(_STD_POSITION * mean[:, 3])
    noise[:, 2] = _VARIANCE_MEASURED_ASPECT
    projected = covariance[:, :4, :4].copy()
    projected[:, _MEASURED, _MEASURED] += noise
    gain = np.linalg.solve(projected, covariance[:, :, :4].transpose(0, 2, 1)).transpose(0, 2, 1)  # 8 x 4 each
    innovation = measurements - mean[:, :4]
    mean = mean + (gain @ innovation[:, :, None])[:, :, 0]
    covariance = covariance - gain @ (projected @ gain.transpose(0, 2, 1))
    for i, track in enumerate(tracks):
        track.mean, track.covariance = mean[i], covariance[i]
