"""How many cameras one box holds: N live RTSP cameras into one daemon, N = 1, 2, 3, ... until a frame is dropped or
glass-to-MQTT p99 passes 150 ms.

    .venv/bin/python bench/capacity.py [--sizes 640x480,1920x1080] [--fps 15] [--max 8] [--seconds 20]

Each camera is a real GStreamer RTSP server (bench/stamp_camera.py: H.264, the wall-clock time stamped into every
frame just before it is encoded), looping frames of the synthetic line at --fps; the daemon runs the default
backend in frames mode (one event per frame with detections; a 0.02 confidence floor, so nearly every frame has
one and its age is measured) against a real mosquitto and subscriber. Per N,
after a warm-up, over --seconds: frames each camera delivered and the daemon inspected, frames dropped
(linewatch_frames_dropped_total: every frame inspected means none), glass-to-MQTT age p50/p99 over all cameras
(bench/freshness.py's alignment of frame_seq to the camera's stamps), the daemon's CPU (% of one core, and per
camera) and RSS, and the camera servers' own CPU: on this box they share the CPU with the daemon, which a real
line's cameras do not. N holds when no frame was dropped, every camera delivered its --fps (3 % margin) and
p99 <= 150 ms. Saves bench/results/capacity.*.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from freshness import Camera, Received, align_daemon, render_frames
from harness import broker, daemon_env, free_port, metric, percentile, proc_figures, running_daemon, save, wait_ready
from machine import describe

P99_LIMIT_MS = 150.0
WARM_S = 6.0


def run(cameras: int, size: tuple[int, int], frames: Path, scratch: Path, broker_url: str,
        args: argparse.Namespace, fps: int | None = None) -> dict[str, Any]:
    width, height = size
    fps = fps or args.fps
    feeds = [Camera(frames, scratch / f"glass-{cameras}-{n}-{fps}.log", fps, width, height) for n in range(cameras)]
    received = Received(broker_url, ["linewatch/+/defects"])
    port = free_port()
    each = {f"LINEWATCH_CAMERAS__C{n}__URL": feed.url for n, feed in enumerate(feeds)}
    try:
        # An event for (nearly) every frame, so every frame's age is measured: a low confidence floor (at 1920x1080
        # the line's defects shrink to a few pixels in the model's 320 px input and are seldom seen otherwise)
        env = daemon_env("", broker_url, scratch / f"state-{cameras}-{width}-{fps}", port,
                         LINEWATCH_EVENTS__MODE="frames", LINEWATCH_MODEL__CONFIDENCE="0.02",
                         LINEWATCH_RULES__MIN_CONFIDENCE="0.02", **each)
        del env["LINEWATCH_CAMERA__URL"]
        with running_daemon(env) as process:
            wait_ready(port, process)
            time.sleep(WARM_S)
            read0, seen0 = metric(port, "linewatch_frames_read_total"), metric(port, "linewatch_frames_inspected_total")
            dropped0 = metric(port, "linewatch_frames_dropped_total")
            cpu0, feed_cpu0 = proc_figures(process.pid)["cpu_s"], sum(proc_figures(f.proc.pid)["cpu_s"] for f in feeds)
            started = time.monotonic()
            opened_ms = time.time() * 1000
            time.sleep(args.seconds)
            elapsed = time.monotonic() - started
            figures = proc_figures(process.pid)
            read = metric(port, "linewatch_frames_read_total") - read0
            inspected = metric(port, "linewatch_frames_inspected_total") - seen0
            dropped = metric(port, "linewatch_frames_dropped_total") - dropped0
            feed_cpu = sum(proc_figures(f.proc.pid)["cpu_s"] for f in feeds) - feed_cpu0
    finally:
        items = received.close()
        for feed in feeds:
            feed.close()
    ages: list[float] = []
    for n, feed in enumerate(feeds):
        mine = [(at, payload) for at, payload in items if payload.get("camera_id") == f"c{n}"]
        aligned, _ = align_daemon(mine, feed.glass(), fps)
        ages += [at - payload["stamp_ms"] for at, payload in aligned if at >= opened_ms]
    cpu_percent = (figures["cpu_s"] - cpu0) * 100 / elapsed
    p99 = percentile(ages, 99)
    return {"cameras": cameras, "size": f"{width}x{height}", "fps": fps, "fps_per_camera": read / elapsed / cameras,
            "inspected_per_s": inspected / elapsed, "dropped": dropped, "age_p50_ms": percentile(ages, 50),
            "age_p99_ms": p99, "ages": len(ages), "daemon_cpu_percent": cpu_percent,
            "daemon_cpu_percent_per_camera": cpu_percent / cameras, "rss_mb": figures["rss_mb"],
            "rss_mb_per_camera": figures["rss_mb"] / cameras, "camera_servers_cpu_percent": feed_cpu * 100 / elapsed,
            "holds": dropped == 0 and read / elapsed / cameras >= 0.97 * fps and p99 is not None
            and p99 <= P99_LIMIT_MS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="640x480,1920x1080")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--max", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    capacity: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as scratch_dir, broker() as mosquitto:
        scratch = Path(scratch_dir)
        # Idle: one camera at 1 fps, what a quiet station costs (the target: under 3 % of one core)
        idle = run(1, (640, 480), render_frames(scratch / "idle.raw", count=45), scratch, mosquitto.url, args, fps=1)
        print({"idle": idle}, flush=True)
        for text in args.sizes.split(","):
            width, height = (int(v) for v in text.split("x"))
            frames = render_frames(scratch / f"frames-{text}.raw", count=45, width=width, height=height)
            capacity[text] = 0
            for cameras in range(1, args.max + 1):
                row = run(cameras, (width, height), frames, scratch, mosquitto.url, args)
                rows.append(row)
                print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
                if not row["holds"]:
                    break
                capacity[text] = cameras
    report = {"benchmark": "capacity", "machine": describe(), "fps": args.fps, "seconds": args.seconds,
              "p99_limit_ms": P99_LIMIT_MS, "capacity": capacity, "idle": idle, "rows": rows}
    machine = report["machine"]
    table = (f"# How many cameras one box holds\n\nMachine: {machine['cpu_model']}, {machine['cpus']} CPUs. N live "
             f"RTSP cameras (H.264, {args.fps} fps each, GStreamer servers on the same box) into one daemon (default "
             f"backend, frames mode, a real mosquitto); {args.seconds:g} s per N after a warm-up. N holds when no "
             f"frame was dropped, every camera delivered its {args.fps} fps and glass-to-MQTT p99 <= "
             f"{P99_LIMIT_MS:g} ms.\n\n"
             + "".join(f"- {size}: **{n} camera(s)**\n" for size, n in capacity.items())
             + f"- idle, one 640x480 camera at 1 fps: the daemon used {idle['daemon_cpu_percent']:.1f} % of one core\n"
             + "\n| size | N | fps per camera | dropped | age p50 ms | age p99 ms | daemon CPU % (per camera) | RSS MB "
             "(per camera) | camera servers' CPU % | holds |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
             + "".join(f"| {r['size']} | {r['cameras']} | {r['fps_per_camera']:.1f} | {r['dropped']:.0f} | "
                       f"{r['age_p50_ms'] or 0:.0f} | {r['age_p99_ms'] or 0:.0f} | {r['daemon_cpu_percent']:.0f} "
                       f"({r['daemon_cpu_percent_per_camera']:.0f}) | {r['rss_mb']:.0f} "
                       f"({r['rss_mb_per_camera']:.0f}) | "
                       f"{r['camera_servers_cpu_percent']:.0f} | {'yes' if r['holds'] else 'no'} |\n" for r in rows))
    out = save("capacity", report, table)
    plot(rows, out.with_suffix(".png"))
    return 0


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (ages, drops) = plt.subplots(1, 2, figsize=(10, 4))
    for size in dict.fromkeys(r["size"] for r in rows):
        mine = [r for r in rows if r["size"] == size]
        ages.plot([r["cameras"] for r in mine], [r["age_p99_ms"] or 0 for r in mine], marker="o", label=size)
        drops.plot([r["cameras"] for r in mine], [r["dropped"] for r in mine], marker="o", label=size)
    ages.axhline(P99_LIMIT_MS, color="grey", linestyle="--", label=f"{P99_LIMIT_MS:g} ms")
    ages.set_xlabel("cameras")
    ages.set_ylabel("glass-to-MQTT p99, ms")
    drops.set_xlabel("cameras")
    drops.set_ylabel("frames dropped in the window")
    for axis in (ages, drops):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
