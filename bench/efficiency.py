"""Efficiency: the daemon against the raw model and the loops a user would write instead, per backend.

    .venv/bin/python bench/efficiency.py [--backends pt,onnx,openvino] [--seconds 8] [--rounds 3]

Over the same frames (an MJPG video of the synthetic line, 640x480, read at full speed), per backend:
- raw: the loaded model's forward pass on tensors already letterboxed to the daemon's input shape, nothing
  else (no decode, no pre- or post-processing), one inference at a time, on the thread count (1 .. the CPUs)
  that runs it fastest;
- raw streams: the same forward passes, one thread per stream running its own copy of the model side by side,
  with the streams and threads the daemon picks (LINEWATCH_MODEL__STREAMS); on a GPU, one stream;
- daemon: `python -m daemon run`, the video as its camera (pace=max, loop), publishing to a real mosquitto;
  frames inspected per second from its /metrics;
- daemon 1 stream: the same with LINEWATCH_MODEL__STREAMS=1 (one inference at a time, as before streams);
- naive: `cv2.VideoCapture.read -> model.predict -> paho publish`, one frame at a time, in one thread;
- stream: Ultralytics' `model.predict(source=video, stream=True)` with a paho publish per result.
Each contender runs in its own fresh process, in interleaved rounds (machine noise hits all alike); medians
are quoted, and every figure is also a ratio to the raw model of the same backend. Saves
bench/results/efficiency.json, .md and .png. It runs unchanged on a GPU (the engine backend joins there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import (
    available_backends,
    broker,
    child_json,
    daemon_env,
    free_port,
    median,
    metric,
    mqtt_client,
    running_daemon,
    save,
    wait_ready,
    weights_for,
    write_line_video,
)
from machine import describe

os.environ.setdefault("YOLO_OFFLINE", "1")
SCRIPT = Path(__file__).resolve()
CONTENDERS = ("raw", "raw_streams", "daemon", "daemon_1_stream", "naive", "stream")
_LABELS = {"raw": "raw model", "raw_streams": "raw, streams side by side", "daemon": "daemon",
           "daemon_1_stream": "daemon, 1 stream", "naive": "naive loop", "stream": "Ultralytics stream"}
_WARM_S = 2.0  # after ready (or after the first frames), before the window opens


# -- the contenders that run in a child process ---------------------------------------------------------------
def child_raw(args: argparse.Namespace) -> dict[str, Any]:
    """One inference at a time, at each thread count from 1 to the CPUs (the window shared among them); the
    fastest is the raw model's throughput."""
    sys.path.insert(0, str(SCRIPT.parent))
    import torch
    from cameras import ceiling_fps

    from daemon.cpus import cpu_limit
    from daemon.detect.model import Detector
    from daemon.detect.threads import limit_runtime_threads
    from daemon.settings import DEFAULT_MODEL, ModelSettings

    detector = Detector(ModelSettings(path=DEFAULT_MODEL, backend=args.backend, device=args.device, streams=1))
    detector.warm_up(640, 480, 3)
    counts = range(1, cpu_limit().count + 1) if detector.device == "cpu" else range(detector.threads,
                                                                                        detector.threads + 1)
    by_threads: dict[int, float] = {}
    cpu_ms: dict[int, float] = {}
    for threads in counts:
        limit_runtime_threads(detector.loaded, detector.weights, threads)
        torch.set_num_threads(threads)
        ceiling_fps(detector, 1, 0.5)  # settle the rebuilt runtime
        started, window = time.process_time(), args.seconds / len(counts)
        by_threads[threads] = ceiling_fps(detector, 1, window)
        cpu_ms[threads] = (time.process_time() - started) * 1000 / (by_threads[threads] * window)
    best = max(by_threads, key=lambda threads: by_threads[threads])
    return {"fps": by_threads[best], "threads": best, "fps_by_threads": by_threads, "cpu_ms_per_frame": cpu_ms[best]}


def child_raw_streams(args: argparse.Namespace) -> dict[str, Any]:
    """Each stream's copy of the model in its own thread, side by side, as the daemon's workers run them."""
    import threading

    import torch

    from daemon.detect.model import Detector
    from daemon.settings import DEFAULT_MODEL, ModelSettings

    sys.path.insert(0, str(SCRIPT.parent))
    from cameras import model_input

    detector = Detector(ModelSettings(path=DEFAULT_MODEL, backend=args.backend, device=args.device))
    detector.warm_up(640, 480, 3)
    counts = [0] * detector.streams
    until = time.perf_counter() + 0.5 + args.seconds
    window_start = until - args.seconds

    def run(stream: int) -> None:
        backend = detector.backend(stream)
        tensor = model_input(detector, 1, backend)
        with torch.inference_mode():
            while (now := time.perf_counter()) < until:
                backend(tensor)
                counts[stream] += now >= window_start
        if detector.device.startswith("cuda"):
            torch.cuda.synchronize()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(detector.streams)]
    for thread in threads:
        thread.start()
    while time.perf_counter() < window_start:
        time.sleep(0.01)
    started = time.process_time()
    for thread in threads:
        thread.join()
    frames = sum(counts)
    return {"fps": frames / args.seconds, "streams": detector.streams, "threads": detector.threads,
            "cpu_ms_per_frame": (time.process_time() - started) * 1000 / max(frames, 1)}


def _payload(result: Any) -> str:
    boxes = result.boxes
    return json.dumps({"detections": [{"cls": int(c), "conf": round(float(p), 4), "xyxy": [round(v, 1) for v in b]}
                                      for c, p, b in zip(boxes.cls.tolist(), boxes.conf.tolist(),
                                                         boxes.xyxy.tolist(), strict=True)]})


def child_loop(args: argparse.Namespace) -> dict[str, Any]:
    """The naive loop or the Ultralytics stream loop: what a user writes in 20 lines."""
    import cv2
    from ultralytics import YOLO

    model = YOLO(str(weights_for(args.backend)), task="detect")
    client = mqtt_client(args.broker)
    device = None if args.device == "auto" else args.device

    def results() -> Any:
        if args.child == "stream":
            while True:  # the file ends; a camera would not
                yield from model.predict(source=args.video, stream=True, imgsz=320, verbose=False, device=device)
        capture = cv2.VideoCapture(args.video)
        while True:
            ok, frame = capture.read()
            if not ok:
                capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                continue
            yield model.predict(frame, imgsz=320, verbose=False, device=device)[0]

    warm_until = window_start = None
    frames, now = 0, time.monotonic()
    for result in results():
        client.publish("bench/efficiency", _payload(result), qos=1)
        now = time.monotonic()
        if warm_until is None:
            warm_until = now + _WARM_S  # the first result came: model set up; warm a while longer
        elif window_start is None:
            if now >= warm_until:
                window_start = now
        else:
            frames += 1
            if now - window_start >= args.seconds:
                break
    client.loop_stop()
    return {"fps": frames / (now - window_start) if window_start else 0.0}


# -- the daemon, from the parent ------------------------------------------------------------------------------
def run_daemon(backend: str, video: Path, broker_url: str, seconds: float, device: str,
               **extra: str) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory() as state:
        env = daemon_env(str(video), broker_url, Path(state), port, LINEWATCH_CAMERA__PACE="max",
                         LINEWATCH_CAMERA__LOOP="true", LINEWATCH_MODEL__BACKEND=backend,
                         LINEWATCH_MODEL__DEVICE=device, **extra)
        with running_daemon(env) as process:
            wait_ready(port, process)
            time.sleep(_WARM_S)
            before, started = metric(port, "linewatch_frames_inspected_total"), time.monotonic()
            time.sleep(seconds)
            after = metric(port, "linewatch_frames_inspected_total")
            return {"fps": (after - before) / (time.monotonic() - started)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=None, help="comma list (default: every one available here)")
    parser.add_argument("--render", type=Path, help="only summarise and draw the rows of a saved efficiency.json")
    parser.add_argument("--seconds", type=float, default=8.0, help="measurement window per contender")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--child", choices=("raw", "raw_streams", "naive", "stream"), help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--video", help=argparse.SUPPRESS)
    parser.add_argument("--broker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child = {"raw": child_raw, "raw_streams": child_raw_streams}.get(args.child, child_loop)
        print(json.dumps(child(args)))
        return 0

    if args.render:
        report = json.loads(args.render.read_text())
        report["summary"] = summarise(report["rows"], list(report["summary"]))
        out = save("efficiency", report, markdown(report))
        plot(report, out.with_suffix(".png"))
        return 0

    from daemon.detect.model import resolve_device

    device = resolve_device(args.device)
    backends = args.backends.split(",") if args.backends else available_backends(device)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch, broker() as mosquitto:
        video = write_line_video(Path(scratch) / "line.avi", frames=600)
        for round_index in range(args.rounds):
            for backend in backends:
                for contender in CONTENDERS:
                    if contender == "daemon":
                        row = run_daemon(backend, video, mosquitto.url, args.seconds, device)
                    elif contender == "daemon_1_stream":
                        row = run_daemon(backend, video, mosquitto.url, args.seconds, device,
                                         LINEWATCH_MODEL__STREAMS="1")
                    else:
                        row = child_json([str(SCRIPT), "--child", contender, "--backend", backend, "--video",
                                          str(video), "--broker", mosquitto.url, "--seconds", str(args.seconds),
                                          "--device", device], timeout=args.seconds * 4 + 180)
                    rows.append({"round": round_index, "backend": backend, "contender": contender, **row})
                    print(json.dumps(rows[-1]), flush=True)
    report = {"benchmark": "efficiency", "machine": describe(), "device": device, "seconds": args.seconds,
              "rounds": args.rounds, "summary": summarise(rows, backends), "rows": rows}
    out = save("efficiency", report, markdown(report))
    plot(report, out.with_suffix(".png"))
    return 0


def summarise(rows: list[dict[str, Any]], backends: list[str]) -> dict[str, Any]:
    """Medians of fps, and each ratio as the median of the ratios within a round (contenders of one round ran
    back to back, so a ratio within a round cancels the machine's drift between rounds)."""
    summary: dict[str, Any] = {}
    for backend in backends:
        mine = [r for r in rows if r["backend"] == backend]
        rounds = sorted({r["round"] for r in mine})
        by_round = {n: {r["contender"]: r["fps"] for r in mine if r["round"] == n} for n in rounds}

        def ratio(top: str, bottom: str, by_round: dict[int, dict[str, float]] = by_round) -> float | None:
            values = [fps[top] / fps[bottom] for fps in by_round.values() if fps.get(top) and fps.get(bottom)]
            return round(median(values) or 0.0, 3) if values else None

        summary[backend] = {
            "fps": {c: median([r["fps"] for r in mine if r["contender"] == c]) for c in CONTENDERS},
            "raw_threads": median([r["threads"] for r in mine if r["contender"] == "raw"]),
            "ratio_to_raw": {c: ratio(c, "raw") for c in CONTENDERS},
            "daemon_over_raw_streams": ratio("daemon", "raw_streams"),
            "daemon_over_1_stream": ratio("daemon", "daemon_1_stream"),
            "daemon_over_naive": ratio("daemon", "naive"),
            "daemon_over_stream": ratio("daemon", "stream"),
        }
    return summary


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    where = machine.get("gpu") or f"{machine.get('cpu_model')}, {machine.get('cpus')} CPUs"
    lines = [f"# Efficiency on {where} (device {report['device']})", "",
             f"Frames per second, medians of {report['rounds']} interleaved rounds of {report['seconds']:g} s; "
             "the same 640x480 frames for all; in brackets, the ratio to the raw model of that backend (one "
             "inference at a time, at its fastest thread count). Ratios are medians of the ratios within each round.",
             "", f"| backend | {' | '.join(_LABELS[c] for c in CONTENDERS)} |", "|---|" + "---:|" * len(CONTENDERS)]
    for backend, row in report["summary"].items():
        cells = [f"{row['fps'][c]:.1f} ({row['ratio_to_raw'][c]:.2f}×)" if row["fps"][c] else "—"
                 for c in CONTENDERS]
        lines.append(f"| {backend} | {' | '.join(cells)} |")
    lines += ["", "| backend | daemon / raw | daemon / raw streams | daemon / daemon 1 stream | daemon / naive | "
              "daemon / stream | raw's threads |", "|---|---:|---:|---:|---:|---:|---:|"]
    for backend, row in report["summary"].items():
        lines.append(f"| {backend} | {row['ratio_to_raw']['daemon']} | {row['daemon_over_raw_streams']} | "
                     f"{row['daemon_over_1_stream']} | {row['daemon_over_naive']} | {row['daemon_over_stream']} | "
                     f"{row['raw_threads']} |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = list(report["summary"])
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    width = 0.8 / len(CONTENDERS)
    for index, contender in enumerate(CONTENDERS):
        values = [report["summary"][b]["fps"][contender] or 0 for b in backends]
        ax.bar([i + (index - (len(CONTENDERS) - 1) / 2) * width for i in range(len(backends))], values, width,
               label=_LABELS[contender])
    ax.set_xticks(range(len(backends)), backends)
    ax.set_ylabel("frames per second")
    ax.set_title(f"Efficiency on {report['machine'].get('gpu') or report['machine'].get('cpu_model')}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
