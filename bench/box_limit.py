"""The box's limit: the daemon against a bare loop that decodes the same frames and runs the same model at its best,
with nothing else, side by side in one run.

    .venv/bin/python bench/box_limit.py [--backends openvino,onnx] [--cameras 1,4] [--seconds 10] [--rounds 3]

Over the same frames (an MJPG video of the synthetic line, 640x480, read at full speed, looped), per backend and
number of cameras N:
- bare: per camera one thread decodes the video with the daemon's own file source (OpenCV's FFmpeg, into reused
  buffers) and letterboxes each frame (Detector.prepare, the capture stage's own call) into a queue; the model's
  streams, each its own thread and copy of the model (LINEWATCH_MODEL__STREAMS, as the daemon picks them), take
  frames from it and run them (Detector.infer_frames: forward pass, NMS, boxes). No events, no outbox, no MQTT,
  no metrics: what this box can decode and infer;
- daemon: `python -m daemon run` with N cameras on the same video (pace=max, loop), publishing to a real
  mosquitto in its default mode; frames inspected per second from its /metrics.
Each runs in its own fresh process, in interleaved rounds; medians are quoted, with each round's daemon / bare
ratio (the target: 0.9x or better). Process CPU per frame is reported for both (getrusage in the bare loop's
process, /proc for the daemon), and per thread by the threads' kernel names (the daemon names each stage's thread;
threads a library starts inherit the name of the thread that started them, so a decoder's own threads count as
its camera's capture). Saves bench/results/box_limit.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from harness import (
    broker,
    child_json,
    daemon_env,
    free_port,
    median,
    metric,
    proc_figures,
    running_daemon,
    save,
    thread_cpu,
    thread_cpu_delta,
    wait_ready,
    write_line_video,
)
from machine import describe

os.environ.setdefault("YOLO_OFFLINE", "1")
SCRIPT = Path(__file__).resolve()
WARM_S = 3.0


def child_bare(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from daemon.buffers import BufferPool
    from daemon.detect.model import Detector
    from daemon.frames import Frame, utc_now
    from daemon.lifecycle import name_native_thread
    from daemon.settings import DEFAULT_MODEL, ModelSettings
    from daemon.sources.factory import SourceOptions, build_source
    from daemon.sources.url import parse_camera_url

    detector = Detector(ModelSettings(path=DEFAULT_MODEL, backend=args.backend, device="cpu"))
    detector.warm_up(640, 480, 3)
    frames: queue.Queue[Frame] = queue.Queue(maxsize=2 * detector.streams)
    done = threading.Event()
    counts = [0] * detector.streams

    def decode(camera: int) -> None:
        name_native_thread(f"decode-{camera}")
        # The daemon's own source for the URL: a looped video read at full speed, or a live camera at its pace
        source = build_source(parse_camera_url(args.video), SourceOptions(loop=True, realtime=False))
        buffers, seq = BufferPool(), 0
        source.open()
        while not done.is_set():
            image = source.read()
            if not isinstance(image, np.ndarray):  # a looped file or a live camera never ends
                raise RuntimeError(f"{args.video} ended")
            image.setflags(write=False)
            frame = Frame(f"c{camera}", seq, image, time.monotonic(), utc_now(), detector.prepare(image, buffers))
            seq += 1
            while not done.is_set():
                try:
                    frames.put(frame, timeout=0.1)
                    break
                except queue.Full:
                    continue
        source.close()

    def infer(stream: int) -> None:
        name_native_thread(f"infer-{stream}")
        while not done.is_set():
            try:
                frame = frames.get(timeout=0.1)
            except queue.Empty:
                continue
            detector.infer_frames([frame], stream)
            counts[stream] += 1

    threads = [threading.Thread(target=decode, args=(n,), daemon=True) for n in range(args.cameras)]
    threads += [threading.Thread(target=infer, args=(n,), daemon=True) for n in range(detector.streams)]
    for thread in threads:
        thread.start()
    time.sleep(WARM_S)
    before, cpu0, threads0, started = sum(counts), time.process_time(), thread_cpu(os.getpid()), time.monotonic()
    time.sleep(args.seconds)
    inspected, cpu, elapsed = sum(counts) - before, time.process_time() - cpu0, time.monotonic() - started
    by_thread = thread_cpu_delta(threads0, thread_cpu(os.getpid()))
    done.set()
    for thread in threads:
        thread.join(5)
    return {"fps": inspected / elapsed, "cpu_ms_per_frame": cpu * 1000 / max(1, inspected),
            "streams": detector.streams, "threads": detector.threads,
            "thread_ms_per_frame": per_frame(by_thread, inspected)}


def per_frame(by_thread: dict[str, float], frames: float) -> dict[str, float]:
    """ms per frame by thread name, every thread listed: an idle one (the publisher in a short defects-mode run
    spends less than the kernel's 10 ms tick) shows as 0."""
    return {name: round(cpu * 1000 / max(1.0, frames), 3) for name, cpu in sorted(by_thread.items())}


def run_daemon(backend: str, video: Path, broker_url: str, cameras: int, seconds: float) -> dict[str, Any]:
    port = free_port()
    each = {f"LINEWATCH_CAMERAS__C{n}__{key}": value for n in range(cameras)
            for key, value in (("URL", str(video)), ("PACE", "max"), ("LOOP", "true"))}
    with tempfile.TemporaryDirectory() as state:
        env = daemon_env("", broker_url, Path(state), port, LINEWATCH_MODEL__BACKEND=backend,
                         LINEWATCH_MODEL__DEVICE="cpu", **each)
        del env["LINEWATCH_CAMERA__URL"]
        with running_daemon(env) as process:
            wait_ready(port, process)
            time.sleep(WARM_S)
            before, cpu0 = metric(port, "linewatch_frames_inspected_total"), proc_figures(process.pid)["cpu_s"]
            threads0, started = thread_cpu(process.pid), time.monotonic()
            time.sleep(seconds)
            after, cpu = metric(port, "linewatch_frames_inspected_total"), proc_figures(process.pid)["cpu_s"]
            by_thread, elapsed = thread_cpu_delta(threads0, thread_cpu(process.pid)), time.monotonic() - started
    inspected = after - before
    return {"fps": inspected / elapsed, "cpu_ms_per_frame": (cpu - cpu0) * 1000 / max(1.0, inspected),
            "thread_ms_per_frame": per_frame(by_thread, inspected)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="openvino,onnx")
    parser.add_argument("--cameras", default="1,4")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--video", help=argparse.SUPPRESS)  # a file or a camera's URL
    args = parser.parse_args()
    if args.child:
        args.cameras = int(args.cameras)
        print(json.dumps(child_bare(args)))
        return 0
    backends, counts = args.backends.split(","), [int(n) for n in args.cameras.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch, broker() as mosquitto:
        video = write_line_video(Path(scratch) / "line.avi", frames=600)
        for round_index in range(args.rounds):
            for backend in backends:
                for cameras in counts:
                    bare = child_json([str(SCRIPT), "--child", "--backend", backend, "--video", str(video),
                                       "--cameras", str(cameras), "--seconds", str(args.seconds)],
                                      timeout=args.seconds * 4 + 180)
                    daemon = run_daemon(backend, video, mosquitto.url, cameras, args.seconds)
                    rows.append({"round": round_index, "backend": backend, "cameras": cameras, "bare": bare,
                                 "daemon": daemon, "ratio": daemon["fps"] / bare["fps"]})
                    print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for backend in backends:
        for cameras in counts:
            mine = [r for r in rows if r["backend"] == backend and r["cameras"] == cameras]
            summary[f"{backend} x{cameras}"] = {
                "bare_fps": median([r["bare"]["fps"] for r in mine]),
                "daemon_fps": median([r["daemon"]["fps"] for r in mine]),
                "ratio": median([r["ratio"] for r in mine]),
                "bare_cpu_ms_per_frame": median([r["bare"]["cpu_ms_per_frame"] for r in mine]),
                "daemon_cpu_ms_per_frame": median([r["daemon"]["cpu_ms_per_frame"] for r in mine])}
    report = {"benchmark": "box_limit", "machine": describe(), "seconds": args.seconds, "rounds": args.rounds,
              "summary": summary, "rows": rows}
    machine = report["machine"]
    table = (f"# The box's limit: the daemon against a bare decode + model loop\n\nMachine: {machine['cpu_model']}, "
             f"{machine['cpus']} CPUs. The same 640x480 MJPG video at full speed for both; medians of {args.rounds} "
             f"interleaved rounds of {args.seconds:g} s; the ratio is the median of each round's daemon / bare.\n\n"
             "| backend | cameras | bare loop fps | daemon fps | daemon / bare | bare CPU ms/frame "
             "| daemon CPU ms/frame |\n"
             "|---|---:|---:|---:|---:|---:|---:|\n"
             + "".join(f"| {key.split(' x')[0]} | {key.split(' x')[1]} | {s['bare_fps']:.1f} | {s['daemon_fps']:.1f} | "
                       f"{s['ratio']:.2f}x | {s['bare_cpu_ms_per_frame']:.2f} | {s['daemon_cpu_ms_per_frame']:.2f} |\n"
                       for key, s in summary.items()))
    out = save("box_limit", report, table)
    plot(summary, out.with_suffix(".png"))
    return 0


def plot(summary: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    keys = list(summary)
    positions = range(len(keys))
    axis.bar([p - 0.2 for p in positions], [summary[k]["bare_fps"] for k in keys], 0.4, label="bare loop")
    axis.bar([p + 0.2 for p in positions], [summary[k]["daemon_fps"] for k in keys], 0.4, label="daemon")
    axis.set_xticks(list(positions), [k.replace(" x", ", cameras: ") for k in keys])
    axis.set_ylabel("frames inspected per second")
    axis.legend()
    axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
