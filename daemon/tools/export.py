"""`linewatch export`: make the ONNX, OpenVINO or TensorRT export of a `.pt`, on the device that will run it,
and check that it finds what the `.pt` finds before it is put in place.

    linewatch export --format onnx|openvino|engine [--weights models/linewatch-defects.pt] [--imgsz 320]
                     [--half] [--int8 --data calib/data.yaml] [--dynamic] [--batch 8] [--device 0]

- The export lands beside the `.pt` under the name `LINEWATCH_MODEL__BACKEND=auto` looks for
  (`<stem>.onnx`, `<stem>_openvino_model/`, `<stem>.engine`). It is built in a scratch folder, checked, and only
  then moved into place, so a daemon never finds a half-written export.
- The check: the same frames of the synthetic line through the `.pt` and the export must give the same
  classes, with boxes within IoU 0.9 (`--min-iou`). A failed check leaves the old export (if any) alone and
  exits 4.
- `engine` needs CUDA and TensorRT, on the GPU that will run it (an engine only runs on the GPU model and
  TensorRT version it was built with). It is FP16 unless `--fp32`. `--int8` needs a calibration set
  (`--data`, a YOLO data.yaml of frames from the line) and then also passes an accuracy check on its
  validation split: mAP50 within `--max-map-drop` of the `.pt`'s.

Exit codes: 0 exported and checked; 2 bad arguments; 3 cannot export here (no CUDA, no TensorRT, no
exporter package); 4 the export failed its check.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.detect.backends import export_path, weights_sha256
from daemon.exitcodes import ExitCode
from daemon.settings import DEFAULT_MODEL

CHECK_FAILED = 4
_EXPORTER = {"onnx": "onnx", "openvino": "openvino", "engine": "tensorrt"}
_CHECK_FRAMES = 24
_CHECK_SEED = 7100  # not a training, validation or test seed (models/MODEL_CARD.md)


@dataclass(frozen=True, slots=True)
class Agreement:
    frames: int
    detections: int  # in the reference
    matched: int  # same class, IoU >= min_iou
    unmatched: tuple[str, ...]  # one line per detection found by one side only, or with a different class

    @property
    def ok(self) -> bool:
        return not self.unmatched


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two xyxy boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def agreement(reference: Sequence[Sequence[tuple[int, Sequence[float]]]],
              candidate: Sequence[Sequence[tuple[int, Sequence[float]]]], min_iou: float) -> Agreement:
    """Match each frame's (class, xyxy) detections one to one, greedily by IoU."""
    unmatched: list[str] = []
    matched = total = 0
    for index, (ref, cand) in enumerate(zip(reference, candidate, strict=True)):
        left = list(cand)
        total += len(ref)
        for cls, box in ref:
            best = max(left, key=lambda other: box_iou(box, other[1]), default=None)
            if best is not None and best[0] == cls and box_iou(box, best[1]) >= min_iou:
                matched += 1
                left.remove(best)
            else:
                found = "nothing" if best is None else f"class {best[0]} at IoU {box_iou(box, best[1]):.2f}"
                unmatched.append(f"frame {index}: class {cls} {[round(v) for v in box]}: export has {found}")
        unmatched.extend(f"frame {index}: export alone finds class {cls} {[round(v) for v in box]}"
                         for cls, box in left)
    return Agreement(len(reference), total, matched, tuple(unmatched))


def detections(model: Any, images: Sequence[Any], imgsz: int, conf: float = 0.5) -> list[list[tuple[int, list[float]]]]:
    """(class, xyxy) per image. conf 0.5: well clear of the floor, where a backend's rounding may tip a box."""
    found = []
    for image in images:
        boxes = model.predict(image, imgsz=imgsz, conf=conf, verbose=False)[0].boxes
        found.append([(int(c), [float(v) for v in xyxy]) for c, xyxy in
                      zip(boxes.cls.tolist(), boxes.xyxy.tolist(), strict=True)])
    return found


def check_frames(count: int = _CHECK_FRAMES) -> list[Any]:
    from daemon.synthetic.line import LineParams, SyntheticLine

    line = SyntheticLine(LineParams(seed=_CHECK_SEED, defect_rate=0.5))
    return [line.render(index * 7).image for index in range(count)]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linewatch export", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", required=True, choices=sorted(_EXPORTER))
    parser.add_argument("--weights", type=Path,
                        default=Path(os.environ.get("LINEWATCH_MODEL__PATH", str(DEFAULT_MODEL))),
                        help="the .pt to export (default: LINEWATCH_MODEL__PATH, else the shipped model)")
    parser.add_argument("--imgsz", type=int, default=None, help="input size (default: the model's own)")
    parser.add_argument("--half", action="store_true", help="FP16 (engine: the default)")
    parser.add_argument("--fp32", action="store_true", help="engine: FP32 instead of FP16")
    parser.add_argument("--int8", action="store_true", help="engine: INT8, calibrated on --data")
    parser.add_argument("--data", type=Path, default=None, help="YOLO data.yaml: INT8 calibration and its check")
    parser.add_argument("--max-map-drop", type=float, default=0.02, help="INT8: largest mAP50 loss accepted")
    parser.add_argument("--dynamic", action="store_true", help="dynamic batch and input size")
    parser.add_argument("--batch", type=int, default=1, help="fixed batch size of a static export")
    parser.add_argument("--device", default=None, help="export device (engine: the CUDA GPU, default 0)")
    parser.add_argument("--min-iou", type=float, default=0.9, help="check: least IoU of matching boxes")
    return parser


def _refusal(args: argparse.Namespace) -> tuple[int, str] | None:
    """(exit code, message) when the export cannot be made as asked, before anything is loaded."""
    if args.weights.suffix != ".pt" or not args.weights.is_file():
        return ExitCode.CONFIG, f"--weights {args.weights}: give an existing .pt file"
    if args.int8 and args.format != "engine":
        return ExitCode.CONFIG, "--int8 is for --format engine only"
    if args.int8 and (args.data is None or not args.data.is_file()):
        return ExitCode.CONFIG, "--int8 needs --data, a YOLO data.yaml of calibration frames from the line"
    if args.format == "engine":
        import torch

        if not torch.cuda.is_available():
            return ExitCode.BOOT, ("a TensorRT engine is built on the GPU that will run it, and CUDA is not "
                                   "available here; run linewatch export on the target device")
    exporter = _EXPORTER[args.format]
    if importlib.util.find_spec(exporter) is None:
        return ExitCode.BOOT, f"--format {args.format} needs the {exporter} package, which is not installed"
    return None


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    refused = _refusal(args)
    if refused:
        print(f"export error: {refused[1]}", file=sys.stderr)
        return refused[0]
    try:
        return _export(args)
    except Exception as exc:  # the exporter or the runtime failed here: nothing was installed
        print(f"export error: cannot export {args.weights} to {args.format} here: {exc}", file=sys.stderr)
        return ExitCode.BOOT


def _export(args: argparse.Namespace) -> int:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")  # never pip-install an exporter behind the user's back
    # OpenVINO's converter sends usage telemetry unless a consent file says no; its one switch without writing to
    # the user's home is the CI variable (openvino_telemetry: disable_in_ci). Nothing leaves this machine.
    os.environ["CI"] = "true"
    from ultralytics import YOLO  # type: ignore[attr-defined]

    reference = YOLO(str(args.weights), task="detect")
    trained = reference.overrides.get("imgsz", 640)
    imgsz = args.imgsz or int(trained if isinstance(trained, int) else max(trained))
    target = export_path(args.weights, args.format)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=args.weights.parent) as scratch:
        staged = Path(scratch) / args.weights.name
        shutil.copy2(args.weights, staged)
        options: dict[str, Any] = {"format": args.format, "imgsz": imgsz, "dynamic": args.dynamic,
                                   "batch": args.batch}
        if args.format == "onnx":
            options["simplify"] = False  # onnxslim is not a dependency; YOLO_AUTOINSTALL=0 would refuse it
        if args.format == "engine":
            options.update(half=not (args.fp32 or args.int8), int8=args.int8, device=args.device or 0)
            if args.int8:
                options["data"] = str(args.data)
        elif args.half:
            options["half"] = True
        made = Path(YOLO(str(staged), task="detect").export(**options))
        exported = YOLO(str(made), task="detect")
        frames = check_frames()
        result = agreement(detections(reference, frames, imgsz), detections(exported, frames, imgsz), args.min_iou)
        print(f"check: {result.matched}/{result.detections} detections agree over {result.frames} frames "
              f"(same class, IoU >= {args.min_iou})")
        for line in result.unmatched[:10]:
            print(f"  {line}")
        if not result.ok:
            print(f"export error: {made.name} disagrees with {args.weights.name}; not installed", file=sys.stderr)
            return CHECK_FAILED
        if args.int8 and not _int8_accurate(reference, exported, args, imgsz):
            return CHECK_FAILED
        _install(made, target)
    print(f"exported {target} ({args.format}, imgsz {imgsz}, sha256 {weights_sha256(target)[:16]}); "
          f"LINEWATCH_MODEL__BACKEND=auto picks it where {args.format} is the fastest runtime available")
    return ExitCode.OK


def _int8_accurate(reference: Any, exported: Any, args: argparse.Namespace, imgsz: int) -> bool:
    base = reference.val(data=str(args.data), imgsz=imgsz, verbose=False).box.map50
    quantized = exported.val(data=str(args.data), imgsz=imgsz, verbose=False).box.map50
    print(f"int8 check: mAP50 {quantized:.3f} against {base:.3f} for the .pt (largest drop {args.max_map_drop})")
    if base - quantized > args.max_map_drop:
        print("export error: the INT8 engine loses too much accuracy; not installed", file=sys.stderr)
        return False
    return True


def _install(made: Path, target: Path) -> None:
    """Move the checked export into place; a folder (OpenVINO) replaces the old one whole."""
    if made.is_dir():
        old = target.with_name(target.name + ".old")
        shutil.rmtree(old, ignore_errors=True)  # left by an install that was cut short
        if target.exists():
            target.rename(old)
        try:
            made.rename(target)
        except OSError:
            if old.exists():
                old.rename(target)  # the previous export stays in service
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(made, target)
