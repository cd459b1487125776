"""Evaluate the linewatch defect model against the synthetic line's ground truth.

Four commands (all offline, CPU):

    python models/evaluate.py boxes  [--model M] [--seed 3000] [--images 300]
        (a) Ultralytics val on a held-out seed: mAP50, mAP50-95, per-class precision/recall/AP; plus
        precision/recall at the daemon's confidence threshold (0.5), matched by class and IoU.
    python models/evaluate.py events --jsonl events.jsonl --url 'synthetic://line?seed=5000&frames=20000'
        (b) event-level figures from the daemon's published event payloads (one JSON object per line).
    python models/evaluate.py examples [--url 'synthetic://line?seed=5000'] [--out models/examples]
        annotated example frames for the model card.
    python models/evaluate.py simulate --url 'synthetic://line?seed=5000' --frames 20000 [--jsonl out.jsonl]
        runs the model in-process, one event per frame with detections (what a daemon without debouncing
        would publish), then scores those events as in (b).

Event payloads are read as {"frame_seq": <render index>, "image": {"width", "height"},
"detections": [{"label", "class_id", "confidence", "bbox": {"x1", "y1", "x2", "y2"}}], ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

os.environ["YOLO_OFFLINE"] = "1"  # before Ultralytics is imported: never reach for the hub or a download
os.environ["YOLO_AUTOINSTALL"] = "0"

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from daemon.synthetic.line import CLASS_NAMES, LineParams, PartTruth, SyntheticLine, TruthBox  # noqa: E402
from daemon.tools.dataset import export_dataset, export_tiles, sample_indices  # noqa: E402
from daemon.tools.export import box_iou  # noqa: E402

DEFAULT_MODEL = REPO / "models" / "linewatch-defects.pt"
TEST_SEED = 3000  # the dataset's test seed: never used for training or validation
EVENT_IOU = 0.3  # a detection "is on" a defect from this IoU up; see score_events
Box = tuple[float, float, float, float]


iou = box_iou  # one IoU for the export check and the evaluation


def _overlap(a: Box, b: Box) -> float:
    """Area of a that lies inside b."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _box(t: TruthBox | PartTruth) -> Box:
    return (t.x1, t.y1, t.x2, t.y2)


def match_frame(
    preds: Sequence[tuple[int, float, Box]], truths: Sequence[TruthBox], iou_min: float, *, by_class: bool = True
) -> tuple[int, int]:
    """Greedy matching, most confident first: (true positives, predictions). Each truth matches at most once."""
    free = list(truths)
    hits = 0
    for class_id, _conf, box in sorted(preds, key=lambda p: -p[1]):
        scored = [(iou(box, _box(t)), t) for t in free if not by_class or t.class_id == class_id]
        best = max(scored, key=lambda s: s[0], default=None)
        if best is not None and best[0] >= iou_min:
            hits += 1
            free.remove(best[1])
    return hits, len(preds)


def predict(
    model: Any, images: Sequence[Any], conf: float, imgsz: int | None = None
) -> list[list[tuple[int, float, Box]]]:
    """(class_id, confidence, box) per image, in the image's pixels."""
    kwargs = {"imgsz": imgsz} if imgsz else {}
    results = model.predict(list(images), conf=conf, device="cpu", verbose=False, **kwargs)
    out = []
    for r in results:
        xyxy = r.boxes.xyxy.cpu().numpy().tolist()
        out.append(
            [
                (int(c), float(s), tuple(b))
                for c, s, b in zip(
                    r.boxes.cls.cpu().numpy().tolist(), r.boxes.conf.cpu().numpy().tolist(), xyxy, strict=True
                )
            ]
        )
    return out


def box_recall_precision(
    model: Any,
    params: LineParams,
    indices: Iterable[int],
    *,
    conf: float = 0.5,
    iou_min: float = 0.5,
    batch: int = 16,
) -> dict[str, Any]:
    """Box recall and precision at a fixed confidence, class-aware, overall and per class."""
    line = SyntheticLine(params)
    per_class = {name: {"truths": 0, "preds": 0, "hits": 0} for name in CLASS_NAMES}
    indices = list(indices)
    for start in range(0, len(indices), batch):
        frames = [line.render(i) for i in indices[start : start + batch]]
        for frame, preds in zip(frames, predict(model, [f.image for f in frames], conf), strict=True):
            for class_id, name in enumerate(CLASS_NAMES):
                truths = [d for d in frame.defects if d.class_id == class_id]
                mine = [p for p in preds if p[0] == class_id]
                per_class[name]["truths"] += len(truths)
                per_class[name]["preds"] += len(mine)
                per_class[name]["hits"] += match_frame(mine, truths, iou_min)[0]
    totals = {k: sum(c[k] for c in per_class.values()) for k in ("truths", "preds", "hits")}

    def rates(c: dict[str, int]) -> dict[str, float]:
        return {"recall": c["hits"] / max(1, c["truths"]), "precision": c["hits"] / max(1, c["preds"])}

    return {
        "conf": conf,
        "iou": iou_min,
        "frames": len(indices),
        **totals,
        **rates(totals),
        "per_class": {n: {**c, **rates(c)} for n, c in per_class.items()},
    }


def box_metrics(model_path: Path, *, params: LineParams, seed: int, images: int, workdir: Path,
                tiles: bool = False) -> dict[str, Any]:
    """(a): Ultralytics val (mAP50, mAP50-95, per-class P/R/AP) on frames of a seed never trained on; with `tiles`,
    on the tiles a tiled camera inspects of `images` frames of that (large) line, as models/train.py trains on."""
    from ultralytics import YOLO

    if tiles:
        data_yaml = export_dataset(workdir / f"tiles-{seed}", train=0, val=0, test=0, params=params,
                                   seeds={"test": seed})
        export_tiles(workdir / f"tiles-{seed}", split="test", frames=images, params=replace(params, seed=seed))
    else:
        data_yaml = export_dataset(
            workdir / f"test-{seed}", train=0, val=0, test=images, params=params, seeds={"test": seed}
        )
    model = YOLO(str(model_path))
    m = model.val(
        data=str(data_yaml),
        split="test",
        batch=16,
        device="cpu",
        plots=False,
        verbose=False,
        project=str(workdir),
        name=f"val-{seed}",
        exist_ok=True,
    )
    per_class = {}
    for i, class_id in enumerate(m.box.ap_class_index.tolist()):
        per_class[CLASS_NAMES[class_id]] = {
            "precision": float(m.box.p[i]),
            "recall": float(m.box.r[i]),
            "ap50": float(m.box.ap50[i]),
            "ap50_95": float(m.box.ap[i]),
        }
    indices = sample_indices(replace(params, seed=seed), images)
    fixed = None if tiles else box_recall_precision(model, replace(params, seed=seed), indices, conf=0.5, iou_min=0.5)
    return {
        "seed": seed,
        "images": images,
        "tiles": tiles,
        "url": replace(params, seed=seed).to_url(),
        "map50": float(m.box.map50),
        "map50_95": float(m.box.map),
        "per_class": per_class,
        "at_conf_0.5": fixed,
    }


def _inspected_parts(line: SyntheticLine, frames: int) -> dict[int, bool]:
    """part_id -> defective, for every part wholly inside the frame at least once in frames 0..frames-1."""
    width = line.params.width
    parts: dict[int, bool] = {}
    for index in range(frames):
        for p in line.truth(index)[0]:
            if p.x1 > 0 and p.x2 < width:
                parts[p.part_id] = p.defective
    return parts


def attribute(box: Box, parts: Sequence[PartTruth], defects: Sequence[TruthBox], iou_min: float = EVENT_IOU
              ) -> tuple[TruthBox | None, PartTruth | None]:
    """What a reported box is on: (the defect it finds, None) when its IoU with one is >= iou_min; else
    (None, the part it overlaps most), or (None, None) on the bare belt."""
    best = max(defects, key=lambda d: iou(box, _box(d)), default=None)
    if best is not None and iou(box, _box(best)) >= iou_min:
        return best, None
    under = max(parts, key=lambda p: _overlap(box, _box(p)), default=None)
    return None, under if under is not None and _overlap(box, _box(under)) > 0 else None


def score_events(
    events: list[dict[str, Any]], params: LineParams, *, frames: int | None = None, iou_min: float = EVENT_IOU
) -> dict[str, Any]:
    """(b): event-level figures: defective parts that produced an event, false events per 1,000 good parts.

    The parts counted are those that passed wholly through the field of view within the frames scored
    (`frames`, else `params.frames`, else up to the last event's frame_seq). Each detection is attributed
    by re-rendering the truth of its frame: it finds a defect when its IoU with one is >= `iou_min` (any
    class: the event fired for that part; `class_correct` reports the label separately). Otherwise it is a
    false detection on the part it overlaps most: an event with such a detection on a good part is one false
    event for that part. Stray boxes on defective parts and on the bare belt are reported separately.
    """
    line = SyntheticLine(params)
    last_seq = max((int(e["frame_seq"]) for e in events), default=-1)
    frames = frames or params.frames or last_seq + 1
    inspected = _inspected_parts(line, frames)
    found: set[int] = set()
    class_ok: set[int] = set()
    false_events: set[tuple[int, int]] = set()
    stray_on_defective = background = detections = 0
    for number, event in enumerate(events):
        seq = int(event["frame_seq"])
        if seq >= frames:
            continue
        sx = params.width / float(event.get("image", {}).get("width", params.width))
        sy = params.height / float(event.get("image", {}).get("height", params.height))
        parts, defects = line.truth(seq)
        for det in event.get("detections", []):
            detections += 1
            b = det["bbox"]
            box = (b["x1"] * sx, b["y1"] * sy, b["x2"] * sx, b["y2"] * sy)
            hit, under = attribute(box, parts, defects, iou_min)
            if hit is not None:
                found.add(hit.part_id)
                if int(det["class_id"]) == hit.class_id:
                    class_ok.add(hit.part_id)
            elif under is None:
                background += 1
            elif under.defective:
                stray_on_defective += 1
            else:
                false_events.add((number, under.part_id))
    defective = {pid for pid, bad in inspected.items() if bad}
    good = {pid for pid, bad in inspected.items() if not bad}
    false_on_good = [pid for _, pid in false_events if pid in good]
    return {
        "frames": frames,
        "events": len(events),
        "detections": detections,
        "defective_parts": len(defective),
        "defective_parts_with_event": len(defective & found),
        "defective_part_recall": len(defective & found) / max(1, len(defective)),
        "class_correct_fraction": len(defective & class_ok) / max(1, len(defective & found)),
        "good_parts": len(good),
        "false_events": len(false_on_good),
        "false_events_per_1000_good_parts": 1000 * len(false_on_good) / max(1, len(good)),
        "good_parts_with_false_event": len(set(false_on_good)),
        "stray_detections_on_defective_parts": stray_on_defective,
        "background_detections": background,
        "missed_defective_parts": sorted(defective - found)[:50],
    }


def simulate_events(
    model: Any, params: LineParams, frames: int, *, conf: float = 0.5, batch: int = 16
) -> list[dict[str, Any]]:
    """Events as a per-frame daemon would publish them: one per frame with at least one detection."""
    line = SyntheticLine(params)
    events = []
    for start in range(0, frames, batch):
        indices = range(start, min(frames, start + batch))
        images = [line.render(i).image for i in indices]
        for index, preds in zip(indices, predict(model, images, conf), strict=True):
            if preds:
                events.append(
                    {
                        "frame_seq": index,
                        "image": {"width": params.width, "height": params.height},
                        "detections": [
                            {
                                "label": CLASS_NAMES[c],
                                "class_id": c,
                                "confidence": round(s, 4),
                                "bbox": {"x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3]},
                            }
                            for c, s, b in preds
                        ],
                    }
                )
    return events


COLORS = ((60, 60, 255), (255, 160, 0), (0, 200, 255), (255, 0, 255))  # BGR per class: red, blue, amber, magenta


def write_examples(model: Any, params: LineParams, out_dir: Path, count: int = 4, conf: float = 0.5) -> list[Path]:
    """Annotated frames: ground truth in thin green, the model's boxes in class colours with confidence.

    Frames are picked greedily so that together they show every class, and one of them has no defect
    at all (a reader should also see that clean parts stay clean).
    """
    import cv2

    line = SyntheticLine(params)
    candidates = [line.render(i) for i in sample_indices(params, 60)]
    chosen: list[Any] = []
    shown: set[int] = set()
    for _ in range(count - 1):
        best = max(candidates, key=lambda f: (len({d.class_id for d in f.defects} - shown), len(f.defects)))
        chosen.append(best)
        shown |= {d.class_id for d in best.defects}
        candidates.remove(best)
    chosen.append(next(f for f in candidates if not f.defects))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, (frame, preds) in enumerate(
        zip(chosen, predict(model, [f.image for f in chosen], conf), strict=True), start=1
    ):
        image = frame.image.copy()
        for d in frame.defects:
            cv2.rectangle(image, (int(d.x1) - 3, int(d.y1) - 3), (int(d.x2) + 2, int(d.y2) + 2), (0, 220, 0), 1)
        for class_id, score, (x1, y1, x2, y2) in preds:
            color = COLORS[class_id % len(COLORS)]
            cv2.rectangle(image, (int(x1), int(y1)), (int(x2), int(y2)), color, 2)
            text = f"{CLASS_NAMES[class_id]} {score:.2f}"
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
            top = max(th + 4, int(y1) - 2)
            cv2.rectangle(image, (int(x1), top - th - 4), (int(x1) + tw + 4, top), color, -1)
            cv2.putText(image, text, (int(x1) + 2, top - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        caption = (
            f"{params.to_url()} frame {frame.index}: {len(frame.defects)} defects, {len(preds)} detections"
            f" (green = truth, colour = model at conf {conf})"
        )
        banner = np.zeros((22, image.shape[1], 3), np.uint8)
        cv2.putText(banner, caption, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        path = out_dir / f"example_{number}.png"
        cv2.imwrite(str(path), np.vstack([banner, image]))
        paths.append(path)
    return paths


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate the linewatch defect model (offline).")
    parser.add_argument("--json", type=Path, default=None, help="also write the result to this file")
    sub = parser.add_subparsers(dest="command", required=True)
    boxes = sub.add_parser("boxes", help="(a) mAP and per-class P/R on a held-out seed")
    boxes.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    boxes.add_argument("--url", default="synthetic://line?defect_rate=0.5", help="line parameters (seed is replaced)")
    boxes.add_argument("--seed", type=int, default=TEST_SEED)
    boxes.add_argument("--images", type=int, default=300)
    boxes.add_argument("--workdir", type=Path, default=Path("/tmp/linewatch-eval"))
    boxes.add_argument("--tiles", action="store_true", help="judge the 320 px tiles of --images frames of the --url "
                       "line (a large one) instead of its frames")
    events = sub.add_parser("events", help="(b) score a JSONL file of the daemon's event payloads")
    events.add_argument("--jsonl", type=Path, required=True)
    events.add_argument("--url", required=True, help="the synthetic:// URL the daemon ran (seed, size, speed)")
    events.add_argument("--frames", type=int, default=None, help="frames the daemon processed (default: url/events)")
    sim = sub.add_parser("simulate", help="run the model over the line in-process and score per-frame events")
    sim.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    sim.add_argument("--url", default="synthetic://line?seed=5000")
    sim.add_argument("--frames", type=int, default=20000)
    sim.add_argument("--conf", type=float, default=0.5)
    sim.add_argument("--jsonl", type=Path, default=None, help="also write the simulated events here")
    examples = sub.add_parser("examples", help="annotated example frames (PNG) for the model card")
    examples.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    examples.add_argument("--url", default="synthetic://line?seed=5000")
    examples.add_argument("--out", type=Path, default=REPO / "models" / "examples")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(2)
    started = time.monotonic()
    if args.command == "boxes":
        result = box_metrics(
            args.model, params=LineParams.from_url(args.url), seed=args.seed, images=args.images, workdir=args.workdir,
            tiles=args.tiles,
        )
    elif args.command == "examples":
        from ultralytics import YOLO

        paths = write_examples(YOLO(str(args.model)), LineParams.from_url(args.url), args.out)
        result = {"examples": [str(p) for p in paths]}
    elif args.command == "events":
        result = score_events(read_jsonl(args.jsonl), LineParams.from_url(args.url), frames=args.frames)
    else:
        from ultralytics import YOLO

        params = LineParams.from_url(args.url)
        simulated = simulate_events(YOLO(str(args.model)), params, args.frames, conf=args.conf)
        if args.jsonl:
            args.jsonl.write_text("".join(json.dumps(e) + "\n" for e in simulated))
        result = {"url": params.to_url(), "conf": args.conf, **score_events(simulated, params, frames=args.frames)}
    result["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
