"""Many cameras, one model: throughput and frame age at N = 1, 2, 4 and 8 cameras in one process, with the
detector's cross-camera batching on and off, against the raw model's ceiling at batch N.

    .venv/bin/python bench/cameras.py [--cameras 1,2,4,8] [--seconds 5] [--rounds 3] [--device auto]

Two kinds of camera, both through the real daemon (App: capture, the batching detector, events, outbox):
- `file`: a video file read at full speed (pace=max, loop): every camera always has a frame waiting;
- `live`: the synthetic line paced faster than the model can follow (per camera 1.5x the ceiling's fps / N):
  each camera's one-frame slot is replaced while the detector works, and the drops are counted.
The ceiling is the model's own forward pass at batch N on pre-letterboxed tensors (no decode, no pre- or
post-processing, no Python between frames), timed in the same run.

Per configuration and round: aggregate fps, per-camera fps, and per-camera capture-to-commit age p50/p99
(from a frame's capture until everything it makes is committed to the outbox). Rounds interleave the
configurations so machine noise hits all alike; medians are quoted. Saves bench/results/cameras.json, .md
and .png. It runs unchanged on a GPU (device auto picks CUDA); no broker is needed (the outbox keeps events).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from machine import describe  # bench/machine.py: scripts here run as `python bench/<name>.py`

os.environ.setdefault("YOLO_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parent / "results"
_WARM_FRAMES = 3  # each camera's frames inspected before the window opens
_CLOSED_BROKER = "mqtt://127.0.0.1:9"  # the discard port: the publisher retries quietly, the outbox keeps all


def write_video(path: Path, frames: int = 240) -> Path:
    import cv2

    from daemon.synthetic.line import LineParams, SyntheticLine

    line = SyntheticLine(LineParams(seed=9300, defect_rate=0.5))
    fourcc = cv2.VideoWriter_fourcc(*"MJPG")  # type: ignore[attr-defined]
    writer = cv2.VideoWriter(str(path), fourcc, 15.0, (640, 480))
    for index in range(frames):
        writer.write(line.render(index).image)
    writer.release()
    return path


def letterboxed_shape(detector: Any, width: int = 640, height: int = 480) -> tuple[int, int]:
    """The (h, w) Ultralytics feeds the model for a batch of same-size frames: the long side at imgsz, the short
    side padded up to the stride only (rectangular inference), e.g. 320x256 for 640x480 at imgsz 320; a static
    export's fixed square."""
    import numpy as np
    from ultralytics.data.augment import LetterBox

    loaded = detector.loaded
    stride = int(getattr(loaded, "stride", 32))
    rectangular = loaded.format == "pt" or bool(getattr(loaded, "dynamic", False))  # a static export is square
    boxed: Any = LetterBox((detector.imgsz, detector.imgsz), auto=rectangular, stride=stride)(
        image=np.zeros((height, width, 3), dtype=np.uint8))
    return int(boxed.shape[0]), int(boxed.shape[1])


def model_input(detector: Any, batch: int, backend: Any) -> Any:
    """A random batch already letterboxed to the shape the daemon's frames get, in the backend's precision."""
    import torch

    height, width = letterboxed_shape(detector)
    tensor = torch.rand(batch, 3, height, width, device=detector.device)
    return tensor.half() if getattr(backend, "fp16", False) else tensor.float()


def ceiling_fps(detector: Any, batch: int, seconds: float) -> float:
    """The raw model at batch N: the loaded backend's forward pass on tensors already letterboxed to the shape
    the daemon's frames get, synchronised."""
    import torch

    backend = detector.loaded
    tensor = model_input(detector, batch, backend)
    cuda = detector.device.startswith("cuda")
    with torch.inference_mode():
        for _ in range(3):
            backend(tensor)
        if cuda:
            torch.cuda.synchronize()
        runs, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            backend(tensor)
            runs += 1
        if cuda:
            torch.cuda.synchronize()
    return runs * batch / (time.perf_counter() - started)


def _drain(tap: Any) -> list[float]:
    """Every age the event stage has put into its tap so far (popleft: the stage may append meanwhile)."""
    return [tap.popleft() for _ in range(len(tap))]


def run_config(detector: Any, kind: str, cameras: int, batching: bool, seconds: float, video: Path,
               live_fps: float, model_path: Path) -> dict[str, Any]:
    from daemon.app import App, open_outbox
    from daemon.metrics import Metrics
    from daemon.ops.health import Health
    from daemon.settings import Settings

    ids = [f"cam{i}" for i in range(1, cameras + 1)]
    if kind == "file":
        entries = {cid: {"url": str(video), "pace": "max", "loop": True} for cid in ids}
    else:
        entries = {cid: {"url": f"synthetic://line?fps={live_fps:.1f}&seed={i}&defect_rate=0.5"}
                   for i, cid in enumerate(ids)}
    with tempfile.TemporaryDirectory() as state:
        settings = Settings.model_validate({
            "cameras": entries, "model": {"path": model_path}, "mqtt": {"url": _CLOSED_BROKER},
            "outbox": {"dir": state}, "http": {"enabled": False},
            "detect": {"max_batch": 8 if batching else 1}, "events": {"stats_interval_s": 0},
            "pipeline": {"shutdown_timeout_s": 0.5}})
        stop = threading.Event()
        metrics = Metrics()
        outbox = open_outbox(settings)
        app = App(settings, stop, detector, outbox, metrics=metrics, health=Health(metrics))
        runner = threading.Thread(target=app.run, name="bench-app", daemon=True)
        runner.start()

        def inspected(cid: str) -> float:
            return metrics.value("linewatch_frames_inspected_total", camera=cid)

        deadline = time.monotonic() + 60
        while min(inspected(c) for c in ids) < _WARM_FRAMES and time.monotonic() < deadline:
            time.sleep(0.05)
        taps = {p.camera_id: p.events.tap_frame_ages() for p in app.pipelines}
        before = {c: inspected(c) for c in ids}
        dropped_before = {c: metrics.value("linewatch_frames_dropped_total", camera=c) for c in ids}
        started = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        after = {c: inspected(c) for c in ids}
        ages = {c: _drain(tap) for c, tap in taps.items()}
        dropped = {c: metrics.value("linewatch_frames_dropped_total", camera=c) - dropped_before[c] for c in ids}
        batches = next(iter(metrics.batch_size.collect())).samples
        stop.set()
        runner.join(30)
    per_camera = {c: (after[c] - before[c]) / elapsed for c in ids}

    def pct(values: list[float], q: int) -> float | None:
        return round(float(statistics.quantiles(values, n=100)[q - 1]), 1) if len(values) >= 2 else None

    count = next((s.value for s in batches if s.name.endswith("_count")), 0.0)
    total = next((s.value for s in batches if s.name.endswith("_sum")), 0.0)
    return {
        "kind": kind, "cameras": cameras, "batching": batching,
        "aggregate_fps": round(sum(per_camera.values()), 2),
        "per_camera_fps": {c: round(v, 2) for c, v in per_camera.items()},
        "age_ms": {c: {"p50": pct(v, 50), "p99": pct(v, 99), "n": len(v)} for c, v in ages.items()},
        "dropped_per_s": {c: round(v / elapsed, 2) for c, v in dropped.items()},
        "mean_batch": round(total / count, 2) if count else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", default="1,2,4,8")
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement window per configuration")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--half", action="store_true", help="FP16 on CUDA")
    parser.add_argument("--imgsz", type=int, default=None)
    parser.add_argument("--kinds", default="file,live")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the CPU quota)")
    parser.add_argument("--backend", default="auto", help="LINEWATCH_MODEL__BACKEND (the committed results: pt)")
    parser.add_argument("--out", type=Path, default=RESULTS / "cameras")
    args = parser.parse_args()

    import torch

    from daemon.detect.model import Detector
    from daemon.logs import configure_logging
    from daemon.settings import DEFAULT_MODEL, ModelSettings

    configure_logging("critical", "json")  # the closed broker's reconnects would fill the output
    counts = [int(n) for n in args.cameras.split(",")]
    detector = Detector(ModelSettings(path=DEFAULT_MODEL, device=args.device, half=args.half,  # type: ignore[call-arg]
                                      imgsz=args.imgsz, threads=args.threads, backend=args.backend))
    detector.warm_up(640, 480, 3, max(counts))
    ceiling_runs: dict[int, list[float]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory() as scratch:
        video = write_video(Path(scratch) / "line.avi")
        rows: list[dict[str, Any]] = []
        for round_index in range(args.rounds):
            for n in counts:  # the ceiling too is measured every round, interleaved with the daemon's runs
                ceiling_runs[n].append(ceiling_fps(detector, n, 2.0))
            ceilings = {n: round(statistics.median(runs), 1) for n, runs in ceiling_runs.items()}
            print("ceiling (raw model, pre-letterboxed), median so far:", ceilings, flush=True)
            for kind in args.kinds.split(","):
                for n in counts:
                    for batching in (True, False):
                        live_fps = min(1000.0, 1.5 * ceilings[n] / n)
                        row = run_config(detector, kind, n, batching, args.seconds, video, live_fps, DEFAULT_MODEL)
                        row["round"] = round_index
                        rows.append(row)
                        print(json.dumps({k: row[k] for k in ("round", "kind", "cameras", "batching",
                                                              "aggregate_fps", "mean_batch")}), flush=True)
    summary = summarise(rows, ceilings)
    report = {
        "benchmark": "cameras", "machine": describe(), "model": detector.info.name, "imgsz": detector.imgsz,
        "backend": detector.backend_name,
        "device": detector.device, "gpu": torch.cuda.get_device_name(0) if detector.device.startswith("cuda") else None,
        "half": args.half, "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "rounds": args.rounds,
        "seconds": args.seconds, "ceiling_fps": ceilings, "summary": summary, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    plot(report, args.out.with_suffix(".png"))
    print(markdown(report))
    return 0


def summarise(rows: list[dict[str, Any]], ceilings: dict[int, float]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for row in rows:
        key = f"{row['kind']}/{row['cameras']}/{'on' if row['batching'] else 'off'}"
        table.setdefault(key, []).append(row)
    out: dict[str, Any] = {}
    for key, group in table.items():
        p50s = [a["p50"] for r in group for a in r["age_ms"].values() if a["p50"] is not None]
        p99s = [a["p99"] for r in group for a in r["age_ms"].values() if a["p99"] is not None]
        per_cam = [v for r in group for v in r["per_camera_fps"].values()]
        out[key] = {
            "aggregate_fps": round(statistics.median(r["aggregate_fps"] for r in group), 2),
            "per_camera_fps_min": round(min(per_cam), 2), "per_camera_fps_max": round(max(per_cam), 2),
            "age_p50_ms": round(statistics.median(p50s), 1) if p50s else None,
            "age_p99_ms": round(statistics.median(p99s), 1) if p99s else None,
            "mean_batch": statistics.median(r["mean_batch"] or 0 for r in group),
            "ceiling_fps": ceilings[group[0]["cameras"]],
        }
    ratios: dict[str, float] = {}
    for kind in ("file", "live"):
        one, four = out.get(f"{kind}/1/on"), out.get(f"{kind}/4/on")
        if one and four:
            ratios[f"{kind}: N=4 / N=1 (batching on)"] = round(four["aggregate_fps"] / one["aggregate_fps"], 3)
        eight_on, eight_off = out.get(f"{kind}/8/on"), out.get(f"{kind}/8/off")
        if eight_on and eight_off:
            ratios[f"{kind}: N=8 batching on / off"] = round(eight_on["aggregate_fps"] / eight_off["aggregate_fps"], 3)
        if eight_on:
            ratios[f"{kind}: N=8 / raw batch-8 ceiling"] = round(eight_on["aggregate_fps"] / eight_on["ceiling_fps"], 3)
    out["ratios"] = ratios
    return out


def markdown(report: dict[str, Any]) -> str:
    cpu = report.get("machine", {}).get("cpu_model", report["cpu"])
    where = report["gpu"] or f"{cpu}, {report['cores']} CPUs, {report['torch_threads']} torch threads"
    lines = [f"# Cameras: {report['model']} at imgsz {report['imgsz']} on {report['device']} ({where})", "",
             f"Medians of {report['rounds']} rounds of {report['seconds']:g} s; age = capture to commit.", "",
             "| source | cameras | batching | aggregate fps | per-camera fps (min–max) | age p50 ms | age p99 ms "
             "| mean batch | raw ceiling at batch N |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for key, row in report["summary"].items():
        if key == "ratios":
            continue
        kind, n, on = key.split("/")
        lines.append(f"| {kind} | {n} | {on} | {row['aggregate_fps']:.1f} | {row['per_camera_fps_min']:.1f}–"
                     f"{row['per_camera_fps_max']:.1f} | {row['age_p50_ms']} | {row['age_p99_ms']} | "
                     f"{row['mean_batch']} | {row['ceiling_fps']:.1f} |")
    lines += ["", "| ratio (same run) | value |", "|---|---:|"]
    lines += [f"| {name} | {value:.3f} |" for name, value in report["summary"]["ratios"].items()]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = report["summary"]
    counts = sorted({int(k.split("/")[1]) for k in summary if k != "ratios"})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, style in (("file", "-"), ("live", "--")):
        for on, marker in (("on", "o"), ("off", "s")):
            ys = [summary.get(f"{kind}/{n}/{on}", {}).get("aggregate_fps") for n in counts]
            if any(y is not None for y in ys):
                ax.plot(counts, ys, style, marker=marker, label=f"{kind}, batching {on}")
    ax.plot(counts, [report["ceiling_fps"][str(n)] if str(n) in report["ceiling_fps"] else report["ceiling_fps"][n]
                     for n in counts], ":", color="black", label="raw model at batch N")
    ax.set_xlabel("cameras in one process")
    ax.set_ylabel("frames inspected per second (all cameras)")
    ax.set_xticks(counts)
    ax.set_title(f"{report['model']} imgsz {report['imgsz']} on {report['gpu'] or report['device']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
