"""Train the linewatch defect detector on the synthetic line, from the model YAML, fully offline, on a CPU.

    YOLO_OFFLINE=1 python models/train.py            # exports the dataset if needed, trains, exports ONNX

Nothing is downloaded: the network is built from Ultralytics' bundled `yolo11n.yaml` (no pretrained
weights), `plots=False` keeps Ultralytics from fetching its plotting font, and the ONNX export runs with
`simplify=False` and YOLO_AUTOINSTALL=0 so that it never tries to pip-install onnxslim. Everything that
defines the run (dataset URL, seeds, sizes, hyper-parameters, wall time) is printed at the end and stored in
the checkpoint under the key "linewatch", so the shipped .pt documents itself.

Sizing for a 2-core CPU (~45 min): imgsz 320 (the 640x480 frames are halved; defects of 20..64 px
become 10..32 px, well above the 8 px stride of the finest head), 1200 training frames, 30 epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

# Must be set before Ultralytics is imported: it reads them at import time.
os.environ["YOLO_OFFLINE"] = "1"
os.environ["YOLO_AUTOINSTALL"] = "0"

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from a checkout, without installing the package

from daemon.synthetic.line import LineParams  # noqa: E402
from daemon.tools.dataset import DEFAULT_SEEDS, export_dataset, export_tiles  # noqa: E402

DEFAULT_OUT = REPO / "models" / "linewatch-defects.pt"
MAX_PT_BYTES, MAX_ONNX_BYTES = 8 * 2**20, 15 * 2**20
# Training frames carry more defects than the default line (0.3), so each image teaches more; there are
# still about two good parts per defective one, which is what keeps false alarms down.
TRAIN_URL = "synthetic://line?defect_rate=0.5"
# A 5 MP camera's view of the same line: parts four times larger, defects of 8-24 px (issue 21).
TILES_URL = "synthetic://line?width=2592&height=1944&min_defect_px=8&max_defect_px=24&defect_rate=0.5"
TILE_SEED_OFFSET = 100  # the tiles' scenes: seeds 1100 (train) and 2100 (val), apart from every other split


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("/tmp/linewatch-data"),
        help="dataset folder; exported there first unless it has a data.yaml",
    )
    parser.add_argument("--url", default=TRAIN_URL, help=f"line parameters of the dataset (default {TRAIN_URL})")
    parser.add_argument("--tiles-url", default=None, help="also the tiles a tiled camera inspects (320 px, overlap "
                        f"0.2) of frames of this large line, e.g. {TILES_URL}")
    parser.add_argument("--tile-frames", type=int, default=200,
                        help="large frames cut into tiles for training (an eighth as many for validation)")
    parser.add_argument("--train", type=int, default=1200)
    parser.add_argument("--val", type=int, default=200)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--model", default="yolo11n.yaml", help="architecture YAML (never pretrained weights)")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--init", type=Path, default=None, help="continue from weights this script wrote (stage 2), not the YAML"
    )
    parser.add_argument("--lr0", type=float, default=0.002)
    parser.add_argument("--warmup-epochs", type=float, default=2.0)
    parser.add_argument("--close-mosaic", type=int, default=5, help="last epochs trained without mosaic")
    parser.add_argument("--seed", type=int, default=0, help="training seed (weight init, augmentation order)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--project", type=Path, default=Path("/tmp/linewatch-runs"))
    parser.add_argument("--name", default="defects")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the stripped .pt goes (.onnx beside)")
    args = parser.parse_args(argv)

    import torch
    from ultralytics import YOLO

    torch.set_num_threads(args.threads)
    data_yaml = args.data_dir / "data.yaml"
    if not data_yaml.exists():
        t0 = time.monotonic()
        export_dataset(
            args.data_dir,
            train=args.train,
            val=args.val,
            test=args.test,
            params=LineParams.from_url(args.url),
            seeds=dict(DEFAULT_SEEDS),
        )
        if args.tiles_url:
            tiles = {}
            for split, frames in (("train", args.tile_frames), ("val", max(1, args.tile_frames // 8))):
                params = replace(LineParams.from_url(args.tiles_url), seed=DEFAULT_SEEDS[split] + TILE_SEED_OFFSET)
                tiles[split] = {"seed": params.seed, "frames": frames,
                                **export_tiles(args.data_dir, split=split, frames=frames, params=params)}
            manifest_path = args.data_dir / "manifest.json"
            manifest = json.loads(manifest_path.read_text())
            manifest["tiles"] = {"url": LineParams.from_url(args.tiles_url).to_url(), "splits": tiles}
            manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
        print(f"exported dataset to {args.data_dir} in {time.monotonic() - t0:.0f} s", flush=True)
    manifest = json.loads((args.data_dir / "manifest.json").read_text())

    model = YOLO(args.model)
    previous = torch.load(args.init, map_location="cpu", weights_only=False).get("linewatch") if args.init else None
    started = time.monotonic()
    model.train(
        data=str(data_yaml),
        epochs=args.epochs,
        imgsz=args.imgsz,
        batch=args.batch,
        device="cpu",
        workers=2,
        seed=args.seed,
        deterministic=True,
        pretrained=str(args.init) if args.init else False,  # only ever our own earlier weights
        amp=False,
        plots=False,
        project=str(args.project),
        name=args.name,
        exist_ok=True,
        cache="ram",
        patience=0,
        # AdamW at a fixed lr rather than "auto": the same run on another machine picks the same optimizer.
        optimizer="AdamW",
        lr0=args.lr0,
        cos_lr=True,
        warmup_epochs=args.warmup_epochs,
        close_mosaic=args.close_mosaic,
        # The camera is fixed and looks straight down: no rotation, mild scale jitter, flips are harmless.
        degrees=0.0,
        scale=0.3,
        translate=0.1,
        fliplr=0.5,
        flipud=0.5,
        mosaic=1.0,
    )
    train_s = time.monotonic() - started
    best = Path(model.trainer.best)

    record = {
        "model": args.model,
        "init": previous,  # the record of the run these weights continued from, if any
        "lr0": args.lr0,
        "imgsz": args.imgsz,
        "epochs": args.epochs,
        "batch": args.batch,
        "train_seed": args.seed,
        "threads": args.threads,
        "train_seconds": round(train_s),
        "dataset": {
            "dir": str(args.data_dir),
            "url": manifest["url"],
            "splits": {
                k: {"seed": v["seed"], "images": v["images"], "boxes": v["boxes"]}
                for k, v in manifest["splits"].items()
            },
            "tiles": manifest.get("tiles"),
        },
        "torch": torch.__version__,
    }
    # Ultralytics already stripped the optimizer from best.pt; add the record so the weights carry it.
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    ckpt["linewatch"] = record
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, args.out)
    size = args.out.stat().st_size
    if size > MAX_PT_BYTES:
        print(f"warning: {args.out} is {size / 2**20:.1f} MB, above the 8 MB budget", file=sys.stderr)

    # The exports the daemon's LINEWATCH_MODEL__BACKEND=auto runs, made and checked as `linewatch export` does
    from daemon.tools.export import main as export

    for fmt in ("onnx", "openvino"):
        if export(["--format", fmt, "--dynamic", "--weights", str(args.out), "--imgsz", str(args.imgsz)]) != 0:
            print(f"the {fmt} export of {args.out} failed its check; not shipping it", file=sys.stderr)
    onnx_path = args.out.with_suffix(".onnx")
    if onnx_path.is_file() and onnx_path.stat().st_size > MAX_ONNX_BYTES:
        print(f"{onnx_path} is above 15 MB; not shipping it", file=sys.stderr)
        onnx_path.unlink()

    print("LINEWATCH_TRAIN_RECORD " + json.dumps(record), flush=True)
    print(f"wrote {args.out} ({size / 2**20:.1f} MB)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
