"""An exported dataset loads through Ultralytics' own dataset machinery with the generator's labels."""

from __future__ import annotations

import itertools
import json
import os

os.environ.setdefault("YOLO_OFFLINE", "1")

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from ultralytics.data.dataset import YOLODataset
from ultralytics.data.utils import check_det_dataset

from daemon.synthetic.line import CLASS_NAMES, LineParams, SyntheticLine
from daemon.tools.dataset import export_dataset, main, sample_indices

PARAMS = LineParams(defect_rate=0.6)
SEEDS = {"train": 101, "val": 202, "test": 303}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dataset")
    return export_dataset(out, train=8, val=3, test=3, params=PARAMS, seeds=SEEDS)


@pytest.mark.slow
def test_ultralytics_reads_the_names_and_split_folders(exported: Path) -> None:
    data = check_det_dataset(str(exported))
    assert data["nc"] == len(CLASS_NAMES)
    assert [data["names"][i] for i in range(data["nc"])] == list(CLASS_NAMES)
    for split, count in (("train", 8), ("val", 3), ("test", 3)):
        assert len(list(Path(data[split]).glob("*.jpg"))) == count


@pytest.mark.slow
def test_yolo_dataset_labels_match_the_rendered_ground_truth(exported: Path) -> None:
    data = check_det_dataset(str(exported))
    dataset = YOLODataset(img_path=data["train"], data=data, task="detect", imgsz=320, augment=False)
    manifest = json.loads((exported.parent / "manifest.json").read_text())
    line = SyntheticLine(replace(PARAMS, seed=SEEDS["train"]))
    labels = {Path(label["im_file"]).stem: label for label in dataset.labels}
    assert len(labels) == 8
    total = 0
    for index in manifest["splits"]["train"]["indices"]:
        frame = line.render(index)
        label = labels[f"train_{index:08d}"]
        expected_cls = [d.class_id for d in frame.defects]
        expected_xywh = [
            (
                (d.x1 + d.x2) / 2 / PARAMS.width,
                (d.y1 + d.y2) / 2 / PARAMS.height,
                (d.x2 - d.x1) / PARAMS.width,
                (d.y2 - d.y1) / PARAMS.height,
            )
            for d in frame.defects
        ]
        assert label["cls"].reshape(-1).astype(int).tolist() == expected_cls
        np.testing.assert_allclose(label["bboxes"].reshape(-1, 4), np.array(expected_xywh).reshape(-1, 4), atol=1e-5)
        total += len(expected_cls)
    assert total > 0  # at a defect rate of 0.6, eight frames without a single defect would mean a broken export


def test_splits_come_from_their_own_seeds_and_frames_are_spread_out(exported: Path) -> None:
    manifest = json.loads((exported.parent / "manifest.json").read_text())
    assert {split: manifest["splits"][split]["seed"] for split in SEEDS} == SEEDS
    indices = manifest["splits"]["train"]["indices"]
    stride = -(-PARAMS.width // int(PARAMS.speed))  # one frame width of belt travel
    assert all(b - a >= stride // 2 for a, b in itertools.pairwise(indices))
    assert indices == sample_indices(replace(PARAMS, seed=SEEDS["train"]), 8)


def test_overlapping_split_seeds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="disjoint"):
        export_dataset(tmp_path, train=2, val=2, test=0, params=PARAMS, seeds={"train": 5, "val": 5})


def test_cli_reports_a_bad_url_as_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path), "--url", "synthetic://line?defect_rate=2"]) == 2
    assert "defect_rate" in capsys.readouterr().err


@pytest.mark.slow
def test_tiles_of_a_5_mp_line_carry_each_defect_in_the_tile_that_holds_it(tmp_path: Path) -> None:
    from daemon.detect.tiles import slice_grid
    from daemon.tools.dataset import export_tiles

    export_dataset(tmp_path, train=1, val=0, test=0, params=LineParams(), seeds={"train": 1000})
    params = LineParams(width=2592, height=1944, min_defect_px=8, max_defect_px=24, defect_rate=0.6, seed=1100)
    counts = export_tiles(tmp_path, split="train", frames=3, params=params, negatives=0.0)
    assert counts["with_defects"] > 0 and counts["without"] == 0
    line, grid = SyntheticLine(params), slice_grid(2592, 1944, 320, 0.2)
    tiles = sorted((tmp_path / "labels" / "train").glob("train_tile1100_*.txt"))
    assert len(tiles) == counts["with_defects"]
    for label in tiles:
        _, _, index, number = label.stem.split("_")
        frame = line.render(int(index))
        x1, y1, _, _ = grid[int(number)]
        # Each box, back in the frame's pixels, is a defect of the frame at least half inside the tile
        for row in label.read_text().splitlines():
            cls, cx, cy, w, h = row.split()
            box = ((float(cx) - float(w) / 2) * 320 + x1, (float(cy) - float(h) / 2) * 320 + y1)
            assert any(d.class_id == int(cls) and abs(max(d.x1, x1) - box[0]) < 0.01 and
                       abs(max(d.y1, y1) - box[1]) < 0.01 for d in frame.defects), (label.name, row)
        image = (tmp_path / "images" / "train" / f"{label.stem}.jpg")
        assert image.is_file()
