"""linewatch's ByteTrack (daemon/events/bytetrack.py) against Ultralytics' own BYTETracker, configured as the
daemon configures it, on the same detections: frame by frame the same tracks in the same order, with the same
ids, states, matched detections and Kalman boxes. Sequences: the model's own detections on the synthetic line
(real defects moving on the conveyor), and a hostile random stream (boxes that jump, vanish, come back, weak
scores that take ByteTrack's second association, zero-size boxes), with frames the detector skipped."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from daemon.events.bytetrack import ByteTrack
from daemon.events.tracking import MATCH_COST, TRACK_HIGH, TRACK_LOW, TRACK_NEW, association_boxes
from daemon.frames import BBox, Detection

LOST_FRAMES = 15
REMOVED_KEPT = 32


class _Results:
    """The Results-like view Ultralytics' BYTETracker reads."""

    def __init__(self, xywh: npt.NDArray[np.float32], conf: npt.NDArray[np.float32],
                 cls: npt.NDArray[np.float32]) -> None:
        self.xywh, self.conf, self.cls = xywh, conf, cls

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, index: Any) -> _Results:
        return _Results(self.xywh[index], self.conf[index], self.cls[index])


class _Reference:
    """Ultralytics' BYTETracker as tracking.py drove it before (the removed tracks trimmed to 32 after each frame)."""

    def __init__(self) -> None:
        from ultralytics.trackers.byte_tracker import BYTETracker

        self.tracker = BYTETracker(SimpleNamespace(  # type: ignore[no-untyped-call]
            track_high_thresh=TRACK_HIGH, track_low_thresh=TRACK_LOW, new_track_thresh=TRACK_NEW,
            track_buffer=LOST_FRAMES, match_thresh=MATCH_COST, fuse_score=True))

    def update(self, xywh: npt.NDArray[np.float32], conf: npt.NDArray[np.float32],
               cls: npt.NDArray[np.float32]) -> None:
        self.tracker.update(_Results(xywh.reshape(-1, 4), conf, cls))
        del self.tracker.removed_stracks[:-REMOVED_KEPT]

    def skip(self, frames: int) -> None:
        from ultralytics.trackers.utils.stracks import joint_stracks

        moving = joint_stracks([t for t in self.tracker.tracked_stracks if t.is_activated], self.tracker.lost_stracks)
        for _ in range(frames):
            self.tracker.multi_predict(moving)
        self.tracker.frame_id += frames


def _same(reference: _Reference, mine: ByteTrack, frame: int) -> None:
    theirs = reference.tracker
    assert mine.frame_id == theirs.frame_id
    want = [(t.track_id, int(t.idx), bool(t.is_activated), int(t.state), t.frame_id, t.start_frame)
            for t in theirs.tracked_stracks]
    got = [(t.track_id, t.idx, t.activated, int(t.state), t.frame_id, t.start_frame) for t in mine.tracked]
    assert got == want, f"frame {frame}: tracked tracks differ"
    assert [(t.track_id, int(t.state)) for t in mine.lost] == [(t.track_id, t.state) for t in theirs.lost_stracks], \
        f"frame {frame}: lost tracks differ"
    for a, b in zip(mine.tracked + mine.lost, theirs.tracked_stracks + theirs.lost_stracks, strict=True):
        np.testing.assert_allclose(a.mean, b.mean, rtol=1e-9, atol=1e-9, err_msg=f"frame {frame} track {a.track_id}")
        np.testing.assert_allclose(a.covariance, b.covariance, rtol=1e-9, atol=1e-9)


def _run(frames: list[tuple[int, tuple[Detection, ...]]]) -> int:
    """Feed both trackers; each item is (frames skipped before it, detections). Returns the tracks started."""
    reference, mine = _Reference(), ByteTrack(high=TRACK_HIGH, low=TRACK_LOW, new=TRACK_NEW, buffer=LOST_FRAMES,
                                              match=MATCH_COST)
    for index, (skipped, detections) in enumerate(frames):
        if skipped:
            reference.skip(skipped)
            mine.predict_ahead(skipped)
        xywh = association_boxes(detections)
        conf = np.array([d.confidence for d in detections], np.float32)
        cls = np.array([d.class_id for d in detections], np.float32)
        reference.update(xywh, conf, cls)
        mine.update(xywh, conf, cls)
        _same(reference, mine, index)
    return mine._next_id - 1


def _detection(x1: float, y1: float, x2: float, y2: float, confidence: float, class_id: int = 0) -> Detection:
    return Detection("defect", class_id, round(confidence, 4), BBox(round(x1, 1), round(y1, 1), round(x2, 1),
                                                                     round(y2, 1)))


@pytest.mark.slow
def test_the_same_tracks_as_ultralytics_on_the_model_s_detections_of_the_synthetic_line(model_path: Any) -> None:
    from daemon.detect.model import Detector
    from daemon.settings import ModelSettings
    from daemon.synthetic.line import LineParams, SyntheticLine

    detector = Detector(ModelSettings(path=model_path, backend="openvino", device="cpu", confidence=0.05))
    line = SyntheticLine(LineParams(seed=7400, defect_rate=0.6))
    rng = np.random.default_rng(7400)
    frames = []
    for index in range(240):
        found, _ = detector.infer(line.render(index).image)
        frames.append((int(rng.integers(1, 4)) if rng.random() < 0.15 else 0, found))  # the detector skipped some
    assert sum(len(f) for _, f in frames) > 200
    assert _run(frames) >= 5


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_the_same_tracks_as_ultralytics_on_a_hostile_random_stream(seed: int) -> None:
    rng = np.random.default_rng(seed)
    objects = [[rng.uniform(0, 600), rng.uniform(0, 440), rng.uniform(4, 60), rng.uniform(4, 60), rng.uniform(-12, 12)]
               for _ in range(8)]
    frames = []
    for _ in range(300):
        detections = []
        for obj in objects:
            obj[0] += obj[4] + rng.normal(0, 2)
            if rng.random() < 0.7:  # seen this frame
                width = 0.0 if rng.random() < 0.02 else obj[2] * rng.uniform(0.8, 1.2)
                confidence = rng.choice([rng.uniform(0.0005, 0.01), rng.uniform(0.01, 1.0)], p=[0.2, 0.8])
                detections.append(_detection(obj[0], obj[1], obj[0] + width, obj[1] + obj[3], confidence,
                                             int(rng.integers(0, 4))))
            if rng.random() < 0.03:  # gone, and another comes in somewhere else
                obj[:] = [rng.uniform(0, 600), rng.uniform(0, 440), rng.uniform(4, 60), rng.uniform(4, 60),
                          rng.uniform(-12, 12)]
        rng.shuffle(detections)  # type: ignore[arg-type]
        frames.append((int(rng.integers(1, 6)) if rng.random() < 0.05 else 0, tuple(detections)))
    assert _run(frames) > 8


def test_a_stale_lost_track_stays_one_more_frame_and_can_come_back_as_ultralytics_does() -> None:
    box = (100.0, 100.0, 130.0, 120.0)
    seen = (0, (_detection(*box, 0.9),))
    frames = [seen] * 5 + [(0, ())] * (LOST_FRAMES + 1) + [seen] * 3
    _run(frames)


def test_an_empty_tracker_stays_empty_without_detections() -> None:
    tracker = ByteTrack(high=TRACK_HIGH, low=TRACK_LOW, new=TRACK_NEW, buffer=LOST_FRAMES, match=MATCH_COST)
    for _ in range(3):
        tracker.update(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32))
    tracker.predict_ahead(5)
    assert tracker.tracked == [] and tracker.lost == [] and tracker.frame_id == 8
