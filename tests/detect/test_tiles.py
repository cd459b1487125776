"""Tiled inference (daemon/detect/tiles.py): the grid, the tiles the regions of interest skip, the merge across
tile borders, the tiles' model inputs, and the real model on 5 MP frames of the synthetic line with defects of
8-24 px, tiled against the whole frame."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from daemon.buffers import BufferPool
from daemon.detect.model import Detector
from daemon.detect.tiles import ModelInput, Tiler
from daemon.events.rules import Rules
from daemon.frames import BBox, Detection, Frame, utc_now
from daemon.settings import ModelSettings
from daemon.settings.cameras import TileSettings
from daemon.settings.events import RulesSettings
from daemon.synthetic.line import LineParams, SyntheticLine
from daemon.synthetic.params import CLASS_NAMES, TruthBox

W, H = 2592, 1944  # 5 MP


def _tiler(size: int = 320, overlap: float = 0.2, **more: object) -> Tiler:
    return Tiler(TileSettings(size=size, overlap=overlap, **more), 320)  # type: ignore[arg-type]


@pytest.mark.parametrize(("width", "height"), [(W, H), (1920, 1080), (640, 480), (200, 150)])
def test_the_grid_covers_every_pixel_with_whole_tiles_and_each_defect_up_to_the_overlap_lies_whole_in_one(
        width: int, height: int) -> None:
    tiler = _tiler(overlap=0.2)
    grid = tiler.grid(width, height)
    covered = np.zeros((height, width), bool)
    for x1, y1, x2, y2 in grid:
        assert (x2 - x1, y2 - y1) == (min(320, width), min(320, height)), "every tile is whole (or the frame)"
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        covered[y1:y2, x1:x2] = True
    assert covered.all()
    assert tiler.grid(width, height) is grid, "computed once per frame size"
    # A defect no larger than the overlap (64 px) lies whole inside at least one tile, wherever it is
    rng = random.Random(7)
    for _ in range(500):
        side = rng.randint(4, min(64, width, height))
        x, y = rng.randint(0, width - side), rng.randint(0, height - side)
        assert any(x1 <= x and y1 <= y and x + side <= x2 and y + side <= y2 for x1, y1, x2, y2 in grid), (x, y, side)


def test_tiles_outside_the_regions_of_interest_are_skipped_and_nothing_the_rules_keep_is_lost() -> None:
    # Given an included region (a triangle over the left part) with an excluded band across its top
    roi = {"units": "pixels", "include": [[[0, 0], [1400, 0], [0, 1944]]], "exclude": [[[0, 0], [2592, 0],
                                                                                        [2592, 500], [0, 500]]]}
    rules = Rules(RulesSettings(roi=roi), CLASS_NAMES, 0.25)  # type: ignore[arg-type]
    tiler = Tiler(TileSettings(size=320, overlap=0.2), 320, keep=rules.may_hold)
    full = _tiler().grid(W, H)
    kept = tiler.grid(W, H)
    # Then tiles wholly to the right of the triangle, or wholly inside the band, are not inspected ...
    assert 0 < len(kept) < len(full) // 2
    assert all(x1 < 1400 for x1, _, _, _ in kept)
    assert all(y2 > 500 for _, _, _, y2 in kept)
    # ... and every detection the rules would keep has its centre in a tile that is inspected
    rng = random.Random(3)
    for _ in range(3000):
        cx, cy = rng.uniform(0, W), rng.uniform(0, H)
        tiny = Detection("dent", 1, 0.9, BBox(cx - 1, cy - 1, cx + 1, cy + 1))
        if rules.refuse(tiny, W, H) is None:
            assert any(x1 <= cx <= x2 and y1 <= cy <= y2 for x1, y1, x2, y2 in kept), (cx, cy)


def _frame(image: np.ndarray, prepared: object = None) -> Frame:
    image.setflags(write=False)
    return Frame("cam", 0, image, 0.0, utc_now(), prepared)  # type: ignore[arg-type]


def test_a_defect_cut_by_a_tile_border_is_one_box_and_other_classes_or_places_stay_apart() -> None:
    tiler = _tiler()
    image = np.zeros((480, 640, 3), np.uint8)
    inputs = tiler.inputs(_frame(image))
    first, second = inputs[0], inputs[1]  # tiles at x = 0 and x = 256: they overlap over x 256..320
    assert (first.x, second.x) == (0, 256)
    found = [() for _ in inputs]
    # The first tile sees the left part of a scratch its border cuts (x 300..320), the second the whole (300..340);
    # a stain at the same place; a dent far away
    found[0] = (Detection("scratch", 0, 0.62, BBox(300, 100, 320, 112)), Detection("stain", 2, 0.8, BBox(302, 100,
                                                                                                        318, 110)))
    found[1] = (Detection("scratch", 0, 0.91, BBox(44, 101, 84, 113)), Detection("dent", 1, 0.7, BBox(200, 50, 220,
                                                                                                    70)))
    merged = tiler.merge(inputs, found)  # type: ignore[arg-type]
    by_label = {d.label: d for d in merged}
    assert len(merged) == 3 and set(by_label) == {"scratch", "stain", "dent"}
    scratch = by_label["scratch"]
    assert scratch.bbox == BBox(300.0, 100.0, 340.0, 113.0), "the union, in the frame's pixels"
    assert scratch.confidence == 0.91
    assert by_label["dent"].bbox == BBox(456.0, 50.0, 476.0, 70.0), "shifted by its tile's place"
    assert [d.confidence for d in merged] == sorted((d.confidence for d in merged), reverse=True)
    assert tiler.merge(inputs, [() for _ in inputs]) == ()


@pytest.fixture(scope="module")
def detector(model_path: Path) -> Detector:
    found = Detector(ModelSettings(path=model_path, imgsz=320))
    found.warm_up(640, 480, 1)  # sets the model up: prepare() letterboxes from then on
    return found


@pytest.mark.parametrize("side", [320, 400], ids=["tile = model input", "tile resized"])
def test_the_tiles_inputs_are_each_crop_letterboxed_in_one_reused_array(side: int) -> None:
    from ultralytics.data.augment import LetterBox

    from daemon.detect.prepare import Letterboxer

    tiler = _tiler(size=side)
    letterboxer = Letterboxer(LetterBox((320, 320), auto=True, stride=32), as_float=True)
    rng = np.random.default_rng(5)
    pool = BufferPool()
    image = rng.integers(0, 256, (1080, 1920, 3), np.uint8)
    crops = [image[y1:y2, x1:x2] for x1, y1, x2, y2 in tiler.grid(1920, 1080)]
    tiles = letterboxer.many(crops, pool)
    assert len(tiles) == len(crops)
    base = tiles[0].base
    assert base is not None and all(t.base is base for t in tiles), "views of one array"
    for tensor, crop in zip(tiles, crops, strict=True):
        assert np.array_equal(tensor, letterboxer(np.ascontiguousarray(crop)))
    # Once the batch is done with, the next batch's tiles go into the same array
    block, made = id(base), pool.made
    del tiles, tensor, base
    again = letterboxer.many([rng.integers(0, 256, crop.shape, np.uint8) for crop in crops], pool)
    assert id(again[0].base) == block and pool.made == made


@pytest.mark.slow
def test_tiles_the_detector_letterboxes_itself_find_what_prepared_tiles_find(detector: Detector) -> None:
    # A live tiled camera's tiles are letterboxed by the detector a batch at a time (memory stays flat); a batch
    # of a frame's tiles goes to the model as the one array they were written into
    image = SyntheticLine(LineParams(width=1280, height=960, min_defect_px=8, max_defect_px=24, defect_rate=1.0,
                                     seed=51, speed=40)).render(20).image
    tiler = _tiler()
    own = tiler.inputs(_frame(image))
    given = [ModelInput(i.image, detector.prepare(np.ascontiguousarray(i.image)).tensor, i.x, i.y)  # type: ignore[union-attr]
             for i in own]
    assert all(i.tensor is None and i.tile for i in own) and all(i.tensor is not None for i in given)
    for start in range(0, len(own), 4):  # passes of four tiles, as PER_BATCH=4 would take them
        mine, _ = detector.infer_inputs(own[start:start + 4])
        theirs, _ = detector.infer_inputs(given[start:start + 4])
        assert mine == theirs


def _matched(truth: TruthBox, found: tuple[Detection, ...], floor: float) -> bool:
    for d in found:
        if d.class_id != truth.class_id or d.confidence < floor:
            continue
        w = min(truth.x2, d.bbox.x2) - max(truth.x1, d.bbox.x1)
        h = min(truth.y2, d.bbox.y2) - max(truth.y1, d.bbox.y1)
        if w > 0 and h > 0:
            inter = w * h
            union = (truth.x2 - truth.x1) * (truth.y2 - truth.y1) + (d.bbox.x2 - d.bbox.x1) * (
                d.bbox.y2 - d.bbox.y1) - inter
            if inter / union >= 0.3:
                return True
    return False


@pytest.mark.slow
def test_small_defects_at_5_mp_are_seen_through_tiles_and_not_on_the_whole_frame(detector: Detector) -> None:
    # Given 5 MP frames of the line whose defects are 8-24 px (as an inspection camera sees them)
    line = SyntheticLine(LineParams(width=W, height=H, min_defect_px=8, max_defect_px=24, defect_rate=0.6,
                                    seed=3200, speed=40))
    tiler = _tiler(size=320, overlap=0.2, full_frame=True)
    # What the model reports (its floor). The shipped model learnt the line at 640x480, so at this scale its
    # confidences run lower than there; the recall target at the rules' threshold is bench/tiles.py's to show.
    floor = ModelSettings().confidence
    truths = whole_hits = tiled_hits = 0
    for index in range(0, 160, 20):  # a part passes in about 32 frames
        rendered = line.render(index)
        frame = _frame(rendered.image, detector.prepare(rendered.image, BufferPool()))
        inputs = tiler.inputs(frame)
        found, _ = detector.infer_inputs(inputs)
        merged = tiler.merge(inputs, found)
        whole = found[-1]  # the full-frame pass, in the frame's pixels
        for truth in rendered.defects:
            truths += 1
            whole_hits += _matched(truth, whole, floor)
            tiled_hits += _matched(truth, merged, floor)
    assert truths >= 20
    # Then the tiles find what the letterboxed whole frame cannot see (measured: 0 of 32 whole, 26 of 32 tiled)
    assert whole_hits / truths < 0.2, f"whole-frame recall {whole_hits}/{truths}"
    assert tiled_hits / truths >= 0.75, f"tiled recall {tiled_hits}/{truths}"


def test_an_untiled_input_list_is_one_whole_frame() -> None:
    image = np.zeros((48, 64, 3), np.uint8)
    frame = _frame(image)
    from daemon.detect.tiles import whole_frame

    assert whole_frame(frame) == [ModelInput(frame.image, None)]
