"""ByteTrack (Zhang et al., ECCV 2022) as Ultralytics' BYTETracker runs it, with the arithmetic done for all tracks at
once.

Ultralytics' BYTETracker (8.4) makes an object per detection and runs each matched track's Kalman update, box conversion
and IoU row one track at a time: 0.20 ms per frame on this project's 2-core machine with the model's detections of the
synthetic line (a few defects in view), where the whole event stage may spend 0.4 ms per frame beside a model that takes
5 (bench/box_limit.py). This module (0.14 ms on the same frames) keeps its algorithm and its numbers (the same two-stage
association with fused scores, the same thresholds, Kalman filter, track states, id order and pool bookkeeping, down to
a track dropped as stale staying one more frame in the lost pool, and Ultralytics' own IoU and assignment functions) and
does each step as a few array operations over every track. tests/events/test_bytetrack.py runs both on the same
detections and requires the same tracks, ids and boxes frame by frame.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
_STD_POSITION = 1.0 / 20  # Ultralytics' KalmanFilterXYAH weights
_STD_VELOCITY = 1.0 / 160
_MOTION = np.eye(8)
_MOTION[range(4), range(4, 8)] = 1.0
_DIAGONAL = np.arange(8)
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

    def __len__(self) -> int:
        return len(self.idx)

    def take(self, rows: list[int] | npt.NDArray[np.intp]) -> _Detections:
        rows = np.asarray(rows, dtype=np.intp)
        return _Detections(self.tlwh[rows], self.xyah[rows], self.score[rows], self.cls[rows], self.idx[rows])


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
        from ultralytics.utils.metrics import bbox_ioa  # imported when first needed: the CLI starts without torch

        if not tracks or not len(detections):
            return np.zeros((len(tracks), len(detections)), dtype=np.float32)
        boxes = means[:, :4] if means is not None else np.array([t.mean[:4] for t in tracks])
        ious = bbox_ioa(_xyxy(boxes), _xyxy(detections.tlwh), iou=True)
        cost: npt.NDArray[np.float32] = 1 - ious
        if fuse:
            cost = 1 - (1 - cost) * detections.score[None].repeat(len(tracks), axis=0)
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
    return _Detections(tlwh32, _xyah(tlwh32), np.asarray(conf, dtype=np.float32), np.asarray(cls, dtype=np.float32),
                       np.arange(len(boxes), dtype=np.intp))


def _xyah(tlwh: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    xyah = tlwh.copy()
    xyah[..., :2] += xyah[..., 2:] / 2
    xyah[..., 2] /= xyah[..., 3]
    return xyah


def _xyxy(boxes: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """From a track's Kalman box (centre x, y, aspect, height) or a detection's top-left, width, height (4 wide,
    which one is told by dtype: a track's is float64) to corners, float32 as Ultralytics' IoU takes them."""
    if boxes.dtype == np.float64:  # xyah: Ultralytics' STrack.tlwh, then xyxy
        tlwh = boxes.copy()
        tlwh[:, 2] *= tlwh[:, 3]
        tlwh[:, :2] -= tlwh[:, 2:] / 2
    else:
        tlwh = boxes.copy()
    tlwh[:, 2:] += tlwh[:, :2]
    return np.ascontiguousarray(tlwh, dtype=np.float32)


def _assign(cost: npt.NDArray[np.float32], limit: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    if cost.size == 0:
        return [], list(range(cost.shape[0])), list(range(cost.shape[1]))
    from ultralytics.trackers.utils.matching import linear_assignment

    matches, unmatched_tracks, unmatched_detections = linear_assignment(cost, thresh=limit)
    return ([(int(t), int(d)) for t, d in matches], [int(t) for t in unmatched_tracks],
            [int(d) for d in unmatched_detections])


def _joint(first: list[Track], second: list[Track]) -> list[Track]:
    ids = {t.track_id for t in first}
    return first + [t for t in second if t.track_id not in ids]


def _without_duplicates(tracked: list[Track], lost: list[Track]) -> tuple[list[Track], list[Track]]:
    """A lost track that overlaps a tracked one almost wholly (IoU > 0.85): the younger of the two goes."""
    if not tracked or not lost:
        return tracked, lost
    from ultralytics.utils.metrics import bbox_ioa

    cost = 1 - bbox_ioa(_xyxy(np.array([t.mean[:4] for t in tracked])), _xyxy(np.array([t.mean[:4] for t in lost])),
                        iou=True)
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
    mean = np.asarray([t.mean for t in tracks])
    covariance = np.asarray([t.covariance for t in tracks])
    for i, track in enumerate(tracks):
        if track.state is not State.TRACKED:
            mean[i][7] = 0
    h = mean[:, 3]
    noise = np.empty_like(mean)  # the process noise's variances (Ultralytics: squares of these deviations)
    noise[:, [0, 1, 3]] = np.square(_STD_POSITION * h)[:, None]
    noise[:, [4, 5, 7]] = np.square(_STD_VELOCITY * h)[:, None]
    noise[:, 2], noise[:, 6] = _VARIANCE_ASPECT, _VARIANCE_ASPECT_RATE
    moved: Array = np.dot(mean, _MOTION.T)
    covariance = np.dot(np.dot(_MOTION, covariance).transpose((1, 0, 2)), _MOTION.T)
    covariance[:, _DIAGONAL, _DIAGONAL] += noise
    for i, track in enumerate(tracks):
        track.mean, track.covariance = moved[i], covariance[i]
    return moved


def _kalman_update(tracks: list[Track], measurements: npt.NDArray[np.float32]) -> None:
    """Ultralytics' KalmanFilterXYAH.update for every matched track at once (the measurement is the first four
    state entries, so projecting is slicing)."""
    if not tracks:
        return
    mean = np.asarray([t.mean for t in tracks])
    covariance = np.asarray([t.covariance for t in tracks])
    h = mean[:, 3]
    std = np.stack([_STD_POSITION * h, _STD_POSITION * h, np.full_like(h, 1e-1), _STD_POSITION * h], axis=1)
    projected = covariance[:, :4, :4] + np.square(std)[:, :, None] * np.eye(4)
    gain = np.linalg.solve(projected, covariance[:, :, :4].transpose(0, 2, 1)).transpose(0, 2, 1)  # 8 x 4 each
    innovation = measurements - mean[:, :4]
    mean = mean + (gain @ innovation[:, :, None])[:, :, 0]
    covariance = covariance - gain @ (projected @ gain.transpose(0, 2, 1))
    for i, track in enumerate(tracks):
        track.mean, track.covariance = mean[i], covariance[i]
