"""One true account of the daemon's CPU at a live camera's pace, and its target: process CPU per frame at most
decode + the model's CPU as the daemon runs it + 2 ms.

    .venv/bin/python bench/cpu_account.py [--fps 30] [--seconds 30] [--rounds 2] [--modes frames,defects]

A live RTSP camera (bench/stamp_camera.py through GStreamer's RTSP server, 640x480 H.264 at --fps) and a real
mosquitto. Per round, side by side:
- the daemon (`python -m daemon run`, default backend and streams) in each events mode; every thread's CPU from
  /proc/<pid>/task/*/stat, by the kernel name each stage gives its thread: capture (decode + letterbox; a
  decoder's own threads carry the name of the thread that started them), detect (the model's forward pass, NMS,
  boxes, batching and routing), events (rules, tracking, the outbox commit), publish (MQTT), other (the HTTP
  server, the main thread, library threads). `other` is the process's own total (/proc/<pid>/stat) less the
  named threads, so the pieces add up to the process CPU per frame exactly;
- the bare loop of bench/box_limit.py on the same camera: the daemon's own source and letterbox on one thread,
  the model's streams (the same backend, streams and threads) on theirs, nothing else. Its decode thread gives
  the decode, its model threads the model's CPU in the daemon's configuration, at the camera's pace.
Medians over the rounds. Saves bench/results/cpu_account.{json,md,png}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from freshness import Camera, render_frames
from harness import (
    PIECES,
    broker,
    child_json,
    cpu_pieces,
    daemon_env,
    free_port,
    median,
    metric,
    proc_figures,
    running_daemon,
    save,
    thread_cpu,
    thread_cpu_delta,
)
from machine import describe

HERE = Path(__file__).resolve().parent
WARM_S = 8.0
TARGET_MARGIN_MS = 2.0


def run_daemon(camera_url: str, broker_url: str, scratch: Path, mode: str, seconds: float) -> dict[str, Any]:
    port = free_port()
    env = daemon_env(camera_url, broker_url, scratch / f"state-{mode}-{port}", port, LINEWATCH_EVENTS__MODE=mode)
    with running_daemon(env) as process:
        wait_until = time.monotonic() + 120
        while metric_or_zero(port) == 0 and time.monotonic() < wait_until:
            time.sleep(0.2)  # a benchmark, not a test: the first inspected frame, then the warm-up
        time.sleep(WARM_S)
        frames0, cpu0, threads0 = metric_or_zero(port), proc_figures(process.pid)["cpu_s"], thread_cpu(process.pid)
        started = time.monotonic()
        time.sleep(seconds)
        frames1, cpu1, threads1 = metric_or_zero(port), proc_figures(process.pid)["cpu_s"], thread_cpu(process.pid)
        elapsed = time.monotonic() - started
    frames = max(1.0, frames1 - frames0)
    by_thread = thread_cpu_delta(threads0, threads1)
    return {"fps": (frames1 - frames0) / elapsed, "process_ms": (cpu1 - cpu0) * 1000 / frames,
            "threads_sum_ms": sum(by_thread.values()) * 1000 / frames,
            "pieces_ms": cpu_pieces(by_thread, cpu1 - cpu0, frames),
            "threads_ms": {name: round(cpu * 1000 / frames, 3) for name, cpu in sorted(by_thread.items()) if cpu}}


def metric_or_zero(port: int) -> float:
    try:
        return metric(port, "linewatch_frames_inspected_total")
    except OSError:
        return 0.0


def run_bare(camera_url: str, seconds: float) -> dict[str, Any]:
    answer = child_json([str(HERE / "box_limit.py"), "--child", "--backend", "auto", "--video", camera_url,
                         "--cameras", "1", "--seconds", str(seconds)], timeout=seconds * 4 + 180)
    threads = answer["thread_ms_per_frame"]
    return {"fps": answer["fps"], "process_ms": answer["cpu_ms_per_frame"],
            "decode_ms": sum(v for k, v in threads.items() if k.startswith("decode")),
            "model_ms": sum(v for k, v in threads.items() if k.startswith("infer")), "threads_ms": threads}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", default="frames,defects")
    args = parser.parse_args()
    modes = args.modes.split(",")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, broker() as mosquitto:
        scratch = Path(tmp)
        camera = Camera(render_frames(scratch / "frames.bgr"), scratch / "camera.log", args.fps)
        try:
            for round_index in range(args.rounds):
                bare = run_bare(camera.url, args.seconds)
                for mode in modes:
                    daemon = run_daemon(camera.url, mosquitto.url, scratch, mode, args.seconds)
                    rows.append({"round": round_index, "mode": mode, "daemon": daemon, "bare": bare})
                    print(f"round {round_index} {mode}: daemon {daemon['process_ms']:.2f} ms/frame "
                          f"{ {k: round(v, 2) for k, v in daemon['pieces_ms'].items()} }; bare decode "
                          f"{bare['decode_ms']:.2f} + model {bare['model_ms']:.2f}", flush=True)
        finally:
            camera.close()
    summary = summarise(rows, modes)
    report = {"benchmark": "cpu_account", "machine": describe(), "fps": args.fps, "seconds": args.seconds,
              "rounds": args.rounds, "target_margin_ms": TARGET_MARGIN_MS, "summary": summary, "rows": rows}
    out = save("cpu_account", report, markdown(report))
    plot(summary, out.with_suffix(".png"), args.fps)
    return 0


def summarise(rows: list[dict[str, Any]], modes: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        pieces = {name: median([r["daemon"]["pieces_ms"][name] for r in mine]) for name in PIECES}
        decode = median([r["bare"]["decode_ms"] for r in mine]) or 0.0
        model = median([r["bare"]["model_ms"] for r in mine]) or 0.0
        process = median([r["daemon"]["process_ms"] for r in mine]) or 0.0
        summary[mode] = {"fps": median([r["daemon"]["fps"] for r in mine]), "process_ms": process,
                         "pieces_ms": pieces, "bare_decode_ms": decode, "bare_model_ms": model,
                         "bare_process_ms": median([r["bare"]["process_ms"] for r in mine]),
                         "budget_ms": round(decode + model + TARGET_MARGIN_MS, 2),
                         "beyond_decode_and_model_ms": round(process - decode - model, 2),
                         "met": process <= decode + model + TARGET_MARGIN_MS}
    return summary


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [f"# Where the daemon's CPU goes at {report['fps']} fps live", "",
             f"Machine: {machine['cpu_model']}, {machine['cpus']} CPUs. A live RTSP camera (640x480 H.264 at "
             f"{report['fps']} fps), default backend and streams; medians of {report['rounds']} rounds of "
             f"{report['seconds']:g} s. Each piece is the CPU of the threads named for it (/proc/<pid>/task), per "
             "inspected frame; `other` is the process total less the named threads, so the pieces add up to the "
             "process. The bare loop (bench/box_limit.py) reads the same camera with the daemon's source, letterbox "
             "and model streams, nothing else.", "",
             "| ms per frame | " + " | ".join(f"daemon, {mode} mode" for mode in report["summary"]) + " |",
             "|---|" + "---:|" * len(report["summary"])]
    summary = report["summary"]
    labels = {"capture": "capture: decode + letterbox", "detect": "detect: model, NMS, boxes, routing",
              "events": "events: rules, tracking, outbox commit", "publish": "publish: MQTT",
              "other": "other: HTTP, main, library threads"}
    def row(label: str, cell: Any) -> str:
        return f"| {label} | " + " | ".join(cell(s) for s in summary.values()) + " |"

    lines += [row(labels[piece], lambda s, piece=piece: f"{s['pieces_ms'][piece]:.2f}") for piece in PIECES]
    lines += [row("**process total**", lambda s: f"**{s['process_ms']:.2f}**"),
              row("bare loop: decode + letterbox", lambda s: f"{s['bare_decode_ms']:.2f}"),
              row("bare loop: the model (daemon's backend, streams, threads)", lambda s: f"{s['bare_model_ms']:.2f}"),
              row(f"target: decode + model + {report['target_margin_ms']:g} ms",
                  lambda s: f"{s['budget_ms']:.2f} ({'met' if s['met'] else 'NOT met'})")]
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path, fps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    bars = ["bare loop"] + [f"daemon\n{mode}" for mode in summary]
    first = next(iter(summary.values()))
    stacks = [{"capture": first["bare_decode_ms"], "detect": first["bare_model_ms"]}]
    stacks += [s["pieces_ms"] for s in summary.values()]
    bottom = [0.0] * len(bars)
    for piece in PIECES:
        heights = [stack.get(piece, 0.0) for stack in stacks]
        axis.bar(bars, heights, bottom=bottom, label=piece)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    axis.axhline(first["budget_ms"], color="black", linestyle="--", linewidth=1, label="decode + model + 2 ms")
    axis.set_ylabel(f"CPU ms per frame at {fps} fps")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
