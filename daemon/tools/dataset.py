"""Export frames of the synthetic line as a YOLO-format detection dataset.

Layout (what Ultralytics expects)::

    out_dir/data.yaml             path, train/val/test image folders, class names
    out_dir/images/{train,val,test}/<split>_<index>.jpg
    out_dir/labels/{train,val,test}/<split>_<index>.txt   one "class cx cy w h" line per defect (normalised)
    out_dir/manifest.json         the line URL, seeds, stride and frame indices: enough to re-create it

Each split renders its own scene seed, and the seeds must differ: parts (and so defects) are derived from
the seed, so disjoint seeds keep the validation and test parts out of training. Consecutive frames of the
belt are near-duplicates, so frames are sampled about one frame width of belt travel apart (with a random
phase), which means each part appears in about one or two images of a split.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from daemon.synthetic.line import CLASS_NAMES, LineFrame, LineParams, SyntheticLine

SPLITS = ("train", "val", "test")
DEFAULT_SEEDS = {"train": 1000, "val": 2000, "test": 3000}


def sample_indices(params: LineParams, count: int, stride: int | None = None) -> list[int]:
    """`count` frame indices at least `stride // 2` apart; the default stride is one frame width of travel."""
    if stride is None:
        stride = math.ceil(params.width / params.speed) if params.speed > 0 else 1
    if stride < 1:
        raise ValueError(f"stride must be >= 1 frame, got {stride}")
    rng = np.random.default_rng(np.random.SeedSequence([params.seed, 0xDA7A]))
    phases = rng.integers(0, max(1, stride // 2), count) if stride > 1 else np.zeros(count, np.int64)
    return [j * stride + int(phase) for j, phase in enumerate(phases)]


def yolo_labels(frame: LineFrame) -> str:
    """The YOLO label file of a frame: class, centre and size normalised to the image."""
    height, width = frame.image.shape[:2]
    lines = [
        f"{d.class_id} {(d.x1 + d.x2) / 2 / width:.6f} {(d.y1 + d.y2) / 2 / height:.6f} "
        f"{(d.x2 - d.x1) / width:.6f} {(d.y2 - d.y1) / height:.6f}"
        for d in frame.defects
    ]
    return "".join(line + "\n" for line in lines)


def export_dataset(
    out_dir: Path,
    *,
    train: int,
    val: int,
    test: int,
    params: LineParams,
    seeds: dict[str, int],
    stride: int | None = None,
    image_format: str = "jpg",
) -> Path:
    """Write the dataset under `out_dir` and return the path of its data.yaml."""
    counts = {"train": train, "val": val, "test": test}
    wanted = [split for split in SPLITS if counts[split] > 0]
    missing = [split for split in wanted if split not in seeds]
    if missing:
        raise ValueError(f"no seed given for split(s) {', '.join(missing)}")
    used = [seeds[split] for split in wanted]
    if len(set(used)) != len(used):
        raise ValueError(f"split seeds must be disjoint, got {', '.join(f'{s}={seeds[s]}' for s in wanted)}")
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be jpg or png, got {image_format!r}")
    out_dir = out_dir.resolve()
    manifest: dict[str, object] = {"url": params.to_url(), "classes": list(CLASS_NAMES), "splits": {}}
    for split in SPLITS:
        (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        (out_dir / "labels" / split).mkdir(parents=True, exist_ok=True)
        if counts[split] == 0:
            continue
        split_params = replace(params, seed=seeds[split])
        line = SyntheticLine(split_params)
        indices = sample_indices(split_params, counts[split], stride)
        boxes = 0
        for index in indices:
            frame = line.render(index)
            name = f"{split}_{index:08d}"
            # JPEG at q95: a tenth of the PNG size (sensor noise compresses badly), artefacts below the noise.
            params_jpg = [cv2.IMWRITE_JPEG_QUALITY, 95] if image_format == "jpg" else []
            if not cv2.imwrite(str(out_dir / "images" / split / f"{name}.{image_format}"), frame.image, params_jpg):
                raise OSError(f"could not write an image under {out_dir}")
            (out_dir / "labels" / split / f"{name}.txt").write_text(yolo_labels(frame))
            boxes += len(frame.defects)
        manifest["splits"][split] = {  # type: ignore[index]
            "seed": seeds[split],
            "images": len(indices),
            "boxes": boxes,
            "indices": indices,
        }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(CLASS_NAMES))
    data_yaml = out_dir / "data.yaml"
    data_yaml.write_text(
        f"# linewatch synthetic line: {params.to_url()}\n"
        f"path: {json.dumps(str(out_dir))}\ntrain: images/train\nval: images/val\ntest: images/test\n"
        f"names:\n{names}"
    )
    return data_yaml


def tile_labels(frame: LineFrame, box: tuple[int, int, int, int]) -> str:
    """The YOLO label file of one tile of a frame: each defect at least half inside it, clipped to it."""
    x1, y1, x2, y2 = box
    width, height = x2 - x1, y2 - y1
    lines = []
    for d in frame.defects:
        ix1, iy1, ix2, iy2 = max(d.x1, x1), max(d.y1, y1), min(d.x2, x2), min(d.y2, y2)
        if ix2 <= ix1 or iy2 <= iy1 or (ix2 - ix1) * (iy2 - iy1) < 0.5 * (d.x2 - d.x1) * (d.y2 - d.y1):
            continue
        lines.append(f"{d.class_id} {((ix1 + ix2) / 2 - x1) / width:.6f} {((iy1 + iy2) / 2 - y1) / height:.6f} "
                     f"{(ix2 - ix1) / width:.6f} {(iy2 - iy1) / height:.6f}\n")
    return "".join(lines)


def export_tiles(out_dir: Path, *, split: str, frames: int, params: LineParams, tile: int = 320,
                 overlap: float = 0.2, negatives: float = 0.05) -> dict[str, int]:
    """Add tiles of large frames to a split of a dataset made by `export_dataset`: the tiles the daemon inspects
    with LINEWATCH_CAMERA__TILES (SAHI's grid, daemon/detect/tiles.py), every tile with a defect and a fraction
    `negatives` of the others (belt and good surfaces, so that a tiled camera does not see defects in them)."""
    from daemon.detect.tiles import slice_grid

    grid = slice_grid(params.width, params.height, tile, overlap)
    line = SyntheticLine(params)
    rng = np.random.default_rng(np.random.SeedSequence([params.seed, 0x711E]))
    counts = {"with_defects": 0, "without": 0, "boxes": 0}
    for index in sample_indices(params, frames):
        frame = line.render(index)
        for number, (x1, y1, x2, y2) in enumerate(grid):
            labels = tile_labels(frame, (x1, y1, x2, y2))
            if not labels and rng.random() >= negatives:
                continue
            name = f"{split}_tile{params.seed}_{index:08d}_{number:03d}"
            if not cv2.imwrite(str(out_dir / "images" / split / f"{name}.jpg"), frame.image[y1:y2, x1:x2],
                               [cv2.IMWRITE_JPEG_QUALITY, 95]):
                raise OSError(f"could not write an image under {out_dir}")
            (out_dir / "labels" / split / f"{name}.txt").write_text(labels)
            counts["with_defects" if labels else "without"] += 1
            counts["boxes"] += labels.count("\n")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="linewatch export-dataset",
        description="Export frames of the synthetic line as a YOLO dataset (train/val/test from disjoint seeds).",
    )
    parser.add_argument("out_dir", type=Path, help="output folder (created; existing files are overwritten)")
    parser.add_argument(
        "--url", default="synthetic://line", help="line parameters, e.g. synthetic://line?defect_rate=0.5"
    )
    parser.add_argument("--train", type=int, default=1000, help="training images (default 1000)")
    parser.add_argument("--val", type=int, default=200, help="validation images (default 200)")
    parser.add_argument("--test", type=int, default=200, help="test images (default 200)")
    for split in SPLITS:
        parser.add_argument(
            f"--seed-{split}",
            type=int,
            default=DEFAULT_SEEDS[split],
            help=f"scene seed of the {split} split (default {DEFAULT_SEEDS[split]})",
        )
    parser.add_argument(
        "--stride", type=int, default=None, help="frames between samples (default: one frame width of belt travel)"
    )
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg", help="image format (default jpg)")
    args = parser.parse_args(argv)
    try:
        params = LineParams.from_url(args.url)
        seeds = {split: getattr(args, f"seed_{split}") for split in SPLITS}
        data_yaml = export_dataset(
            args.out_dir,
            train=args.train,
            val=args.val,
            test=args.test,
            params=params,
            seeds=seeds,
            stride=args.stride,
            image_format=args.format,
        )
    except ValueError as exc:
        print(f"export-dataset: {exc}", file=sys.stderr)
        return 2  # daemon.exitcodes.ExitCode.CONFIG: a wrong argument, not a crash
    print(data_yaml)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
