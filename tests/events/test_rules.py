"""The rules above the model's floor (daemon/events/rules.py): per-class thresholds, ignored classes, box area
bounds and regions of interest, each refusal with its reason, and which tiles a region lets the detector skip."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.events.rules import AREA, IGNORED, ROI, Rules
from daemon.frames import BBox, Detection
from daemon.settings.events import RulesSettings

CLASSES = ("scratch", "dent", "stain", "missing_component")


def _rules(floor: float = 0.25, **settings: Any) -> Rules:
    return Rules(RulesSettings.model_validate(settings), CLASSES, floor)


def _at(x: float, y: float, class_id: int = 0, confidence: float = 0.9, side: float = 10.0) -> Detection:
    return Detection(CLASSES[class_id], class_id, confidence,
                     BBox(x - side / 2, y - side / 2, x + side / 2, y + side / 2))


def test_a_class_threshold_overrides_the_common_one_and_never_goes_under_the_model_s_floor() -> None:
    rules = _rules(0.3, min_confidence=0.7, classes={"dent": {"min_confidence": 0.5},
                                                     "stain": {"min_confidence": 0.1}})
    assert [rules.limits(i).min_confidence for i in range(4)] == [0.7, 0.5, 0.3, 0.7]
    assert rules.strong(_at(5, 5, 0, 0.7)) and not rules.strong(_at(5, 5, 0, 0.69))  # at the threshold counts
    assert rules.strong(_at(5, 5, 1, 0.5)) and not rules.strong(_at(5, 5, 2, 0.29))


def test_a_weak_detection_is_not_refused_it_only_does_not_count() -> None:
    rules = _rules(min_confidence=0.9)
    weak = _at(50, 50, confidence=0.3)
    assert rules.refuse(weak, 640, 480) is None and not rules.strong(weak)  # it keeps a track alive


def test_ignored_classes_by_list_or_by_class_rule_are_refused_first() -> None:
    rules = _rules(ignore="stain", classes={"dent": {"ignore": True}}, min_area_px=1e6)
    assert rules.refuse(_at(50, 50, 2), 640, 480) == IGNORED
    assert rules.refuse(_at(50, 50, 1), 640, 480) == IGNORED  # not AREA, though too small as well
    assert rules.refuse(_at(50, 50, 0), 640, 480) == AREA


@pytest.mark.parametrize(("side", "reason"), [(9.9, AREA), (10.0, None), (30.0, None), (30.1, AREA)])
def test_box_area_bounds_are_inclusive(side: float, reason: str | None) -> None:
    rules = _rules(min_area_px=100, max_area_px=900)
    assert rules.refuse(_at(100, 100, side=side), 640, 480) == reason


def test_a_class_area_bound_applies_to_that_class_only() -> None:
    rules = _rules(classes={"scratch": {"min_area_px": 400}})
    assert rules.refuse(_at(100, 100, 0), 640, 480) == AREA
    assert rules.refuse(_at(100, 100, 1), 640, 480) is None


def test_normalised_regions_follow_the_frame_size_and_an_edge_counts_as_inside() -> None:
    # include the right half; exclude its top-right quarter
    rules = _rules(roi={"include": [[[0.5, 0], [1, 0], [1, 1], [0.5, 1]]],
                        "exclude": [[[0.75, 0], [1, 0], [1, 0.5], [0.75, 0.5]]]})
    assert rules.refuse(_at(100, 240), 640, 480) == ROI  # left half
    assert rules.refuse(_at(400, 400), 640, 480) is None
    assert rules.refuse(_at(320, 400), 640, 480) is None  # centre on the include's edge
    assert rules.refuse(_at(600, 100), 640, 480) == ROI  # in the excluded quarter
    # the camera came back at another size: the same regions, in its pixels
    assert rules.refuse(_at(1500, 300), 1920, 1080) == ROI and rules.refuse(_at(1500, 900), 1920, 1080) is None


def test_pixel_regions_are_taken_as_they_are() -> None:
    rules = _rules(roi={"units": "pixels", "include": [[[0, 0], [200, 0], [200, 200], [0, 200]]]})
    assert rules.refuse(_at(100, 100), 640, 480) is None and rules.refuse(_at(100, 100), 1920, 1080) is None
    assert rules.refuse(_at(300, 100), 640, 480) == ROI


def test_a_tile_is_skipped_only_when_no_defect_found_in_it_could_pass_the_regions() -> None:
    rules = _rules(roi={"include": [[[0.5, 0], [1, 0], [1, 1], [0.5, 1]]],
                        "exclude": [[[0.75, 0], [1, 0], [1, 0.5], [0.75, 0.5]]]})
    assert not rules.may_hold(640, 480, (0, 0, 200, 200))  # no included region touches it
    assert rules.may_hold(640, 480, (200, 0, 400, 200))  # it reaches into the included half
    assert rules.may_hold(640, 480, (0, 0, 320, 200))  # touching the included half's edge: a centre there counts
    assert not rules.may_hold(640, 480, (500, 0, 640, 240))  # wholly excluded
    assert rules.may_hold(640, 480, (500, 0, 640, 241))  # one row out of the excluded quarter
    assert _rules().may_hold(640, 480, (0, 0, 10, 10))  # no regions: every tile


def test_a_region_that_crosses_itself_never_makes_a_tile_skipped() -> None:
    bow_tie = [[0.5, 0], [1, 1], [1, 0], [0.5, 1]]  # shapely calls it invalid
    rules = _rules(roi={"include": [bow_tie]})
    assert rules.may_hold(640, 480, (0, 0, 100, 100))
