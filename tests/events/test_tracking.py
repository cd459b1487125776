"""The defect lifecycle on ByteTrack (the same tracks as Ultralytics' BYTETracker: test_bytetrack.py), fed
detections of a box moving along a conveyor."""

from __future__ import annotations

import numpy as np

from daemon.events.tracking import DefectTracker, DefectView
from daemon.frames import BBox, Detection, EndReason, Frame, utc_now

IMAGE = np.zeros((480, 640, 3), dtype=np.uint8)
IMAGE.setflags(write=False)
STEP_PX = 8.0  # the synthetic line's default conveyor speed, per frame
INTERVAL_S = 1 / 15


def frame(seq: int, at: float | None = None) -> Frame:
    return Frame("cam", seq, IMAGE, at if at is not None else seq * INTERVAL_S, utc_now())


def scratch(seq: int, confidence: float = 0.9) -> Detection:
    x = 100 + STEP_PX * seq  # a 15 px wide scratch: it moves half its width per frame
    return Detection("scratch", 0, confidence, BBox(x, 200, x + 15, 230))


def tracker(live: bool = True) -> DefectTracker:
    return DefectTracker(confirm_hits=3, confirm_window=5, lost_frames=15, min_track_frames=lambda c: 1, live=live)


def strong(detection: Detection) -> bool:
    return detection.confidence >= 0.7


def feed(t: DefectTracker, seqs: range, confidence: float = 0.9) -> list[DefectView]:
    changes: list[DefectView] = []
    for seq in seqs:
        changes += t.update(frame(seq), (scratch(seq, confidence),), 30.0, strong)
    return changes


def test_a_defect_is_new_after_k_strong_sightings_and_ends_once_after_it_is_gone() -> None:
    t = tracker()
    changes = feed(t, range(0, 2))
    assert changes == [], "two sightings are not three"
    changes = feed(t, range(2, 30))
    assert [c.kind for c in changes] == ["new"]
    new = changes[0]
    assert new.frames_seen == 3 and new.first.frame_seq == 0 and new.last.frame_seq == 2
    # When it leaves the view: `end` after the lost-frame limit, with its whole life and its best view
    gone: list[DefectView] = []
    for seq in range(30, 50):
        gone += t.update(frame(seq), (), 30.0, strong)
    assert [c.kind for c in gone] == ["end"]
    end = gone[0]
    assert end.defect_id == new.defect_id and end.frames_seen == 30 and end.end_reason == "gone"
    assert end.last.frame_seq == 29 and t.open_tracks == 0


def test_weak_sightings_keep_a_track_alive_but_only_strong_ones_confirm_it() -> None:
    t = tracker()
    changes: list[DefectView] = []
    # strong, weak, strong, weak, strong: three strong within five frames, one track all along
    for seq, confidence in enumerate((0.75, 0.5, 0.72, 0.45, 0.71)):
        changes += t.update(frame(seq), (scratch(seq, confidence),), 30.0, strong)
    assert [c.kind for c in changes] == ["new"] and changes[0].frames_seen == 5
    weak_only = tracker()
    assert feed(weak_only, range(0, 20), confidence=0.5) == [], "weak sightings alone never make a defect"


def test_frames_the_live_hand_off_skipped_count_towards_losing_a_track() -> None:
    t = tracker()
    feed(t, range(0, 5))
    # the next inspected frame is seq 30: 24 frames were skipped, more than the 15-frame limit
    changes = t.update(frame(30), (), 30.0, strong)
    assert [c.kind for c in changes] == ["end"]


def test_a_camera_outage_is_a_gap_in_capture_time_on_a_live_camera_but_not_in_a_file() -> None:
    for live, expected in ((True, ["end"]), (False, [])):
        t = tracker(live=live)
        feed(t, range(0, 5))
        # frame 5 comes 10 s after frame 4 (the camera was reconnecting); seq has no gap
        changes = t.update(frame(5, at=4 * INTERVAL_S + 10.0), (), 30.0, strong)
        assert [c.kind for c in changes] == expected, f"live={live}"


def test_closing_ends_every_confirmed_track_with_the_reason() -> None:
    t = tracker()
    feed(t, range(0, 4))
    ended = t.close(EndReason.END_OF_STREAM)
    assert [(c.kind, c.end_reason) for c in ended] == [("end", EndReason.END_OF_STREAM)]


def test_a_detector_slower_than_the_camera_still_confirms_defects() -> None:
    # The live hand-off passes every third frame: K of M counts inspected frames, not the camera's, and a
    # defect that appears later (its track starts unconfirmed) is still associated across the skipped frames
    t = tracker()
    changes: list[DefectView] = []
    for seq in range(0, 60, 3):
        later = Detection("dent", 1, 0.9, BBox(40 + STEP_PX * (seq - 30), 300, 60 + STEP_PX * (seq - 30), 330))
        detections = (scratch(seq),) + ((later,) if seq >= 30 else ())
        changes += t.update(frame(seq), detections, 30.0, strong)
    assert [(c.kind, c.best.label) for c in changes] == [("new", "scratch"), ("new", "dent")], changes
    assert changes[1].first.frame_seq == 30 and changes[1].last.frame_seq == 36


def test_the_tracker_keeps_a_few_removed_tracks_not_a_thousand() -> None:
    """Ultralytics' BYTETracker kept its last 1,000 removed tracks, which linewatch never reads: memory grew for
    hours. ByteTrack here remembers the ids of the last few only, and holds no track once it is gone."""
    tracker = DefectTracker(confirm_hits=1, confirm_window=1, lost_frames=1, min_track_frames=lambda _: 1)
    for index in range(800):  # a new defect every 8 frames, far from the last, gone after one: 100 come and go
        x = 40.0 + 120 * ((index // 8) % 4)
        detections = (Detection("scratch", 0, 0.9, BBox(x, 200, x + 15, 230)),) if index % 8 == 0 else ()
        tracker.update(frame(index), detections, 5.0, strong)
    inner = tracker._tracker
    assert 0 < len(inner._removed_ids) <= inner.removed_kept == 32
    assert len(inner.tracked) + len(inner.lost) <= 2


def small_fast(seq: int, x0: float, y: float = 900.0, step: float = 40.0) -> Detection:
    x = x0 + step * seq  # a 12 px dent on a 5 MP frame of a line moving 40 px per frame: over 3x its size
    return Detection("dent", 1, 0.9, BBox(x, y, x + 12, y + 12))


def run_line(t: DefectTracker, seqs: range, starts: tuple[float, ...]) -> list[DefectView]:
    changes: list[DefectView] = []
    for seq in seqs:
        changes += t.update(frame(seq), tuple(small_fast(seq, x0) for x0 in starts), 30.0, strong)
    return changes + t.close(EndReason.END_OF_STREAM)


def test_a_defect_smaller_than_the_lines_motion_keeps_one_track_when_the_camera_says_how_fast_the_line_moves() -> None:
    """A 12 px defect that moves 40 px per frame never overlaps its last position, even with the box-sized buffer:
    every frame starts a new track that is never seen again, and no defect is ever reported. With the camera's
    motion (LINEWATCH_CAMERAS__<ID>__MOTION_PX) the association reaches that far: one `new` and one `end`, also
    when the detector inspects only every third frame, and two defects 150 px apart on one part stay two."""
    def motion(px: float) -> DefectTracker:
        return DefectTracker(confirm_hits=3, confirm_window=5, lost_frames=15, min_track_frames=lambda c: 1,
                             motion_px=px)

    assert run_line(tracker(), range(0, 40), (100.0,)) == []
    changes = run_line(motion(40.0), range(0, 40), (100.0,))
    assert [c.kind for c in changes] == ["new", "end"] and changes[1].frames_seen == 40
    slow = motion(40.0)  # the detector takes every third frame, from before the part comes into view
    for seq in range(-9, 0, 3):
        slow.update(frame(seq), (), 30.0, strong)
    changes = run_line(slow, range(0, 60, 3), (100.0,))
    assert [c.kind for c in changes] == ["new", "end"] and changes[1].frames_seen == 20
    changes = run_line(motion(40.0), range(0, 40), (100.0, 250.0))
    news = [c for c in changes if c.kind == "new"]
    assert len(news) == 2 and {round(c.first.bbox.x1) for c in news} == {100, 250}
    assert all(c.frames_seen == 40 for c in changes if c.kind == "end")
