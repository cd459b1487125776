"""Overhead: start-to-ready time, peak memory, CPU per frame outside the model, and no leak over a long run.

    .venv/bin/python bench/overhead.py [--minutes 10] [--starts 3] [--fps 30]

All against `python -m daemon run` as a process with a real mosquitto, the model already on disk:
- start to ready: from spawning the process until /readyz answers 200 (model loaded, warmed up, camera
  open), --starts times, median; the backend is the default (auto); each start is paired with one on a single
  stream (LINEWATCH_MODEL__STREAMS=1, one copy of the model), to show what the streams cost in time and memory;
- a long run: a live RTSP camera at --fps that stamps glass time into its frames (bench/stamp_camera.py),
  the daemon in frames mode, for --minutes; every 10 s the process's RSS, peak RSS (VmHWM), threads and open
  file descriptors from /proc, and its CPU seconds and frames inspected; and every event's glass-to-MQTT age
  at a real subscriber (aligned as in bench/freshness.py), to show it stays flat;
- CPU per frame: the process's CPU time per inspected frame over the run, against the raw model's own CPU
  time per frame (its forward passes alone, its streams side by side as the daemon runs them, in a fresh
  process); the difference is what the daemon spends outside the model (decode, letterbox, NMS, events,
  outbox, MQTT, metrics); a multi-threaded runtime's pool (OpenVINO, ONNX Runtime) also spins between
  inferences, so at a live camera's rate this is an upper bound;
- where that time goes, piece by piece and on which thread (bench/frame_costs.py).
No growth: the RSS slope over the second half of the run (after the allocator has warmed up), and the
first and last thread and descriptor counts. Saves bench/results/overhead.json, .md and .png.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import frame_costs
from freshness import Camera, Received, align_daemon, render_frames
from harness import (
    PIECES,
    broker,
    child_json,
    cpu_pieces,
    daemon_env,
    free_port,
    median,
    metric,
    percentile,
    proc_figures,
    running_daemon,
    save,
    thread_cpu,
    thread_cpu_delta,
    wait_ready,
)
from machine import describe

SCRIPT = Path(__file__).resolve()
_SAMPLE_S = 10.0


def start_to_ready(broker_url: str, scratch: Path, **extra: str) -> dict[str, Any]:
    port = free_port()
    env = daemon_env("synthetic://line", broker_url, scratch / f"state-{port}", port, **extra)
    started = time.monotonic()
    with running_daemon(env) as process:
        ready = wait_ready(port, process)
        figures = proc_figures(process.pid)
    return {"ready_s": round(ready - started, 2), "rss_at_ready_mb": round(figures["rss_mb"], 1)}


def default_backend() -> str:
    """What LINEWATCH_MODEL__BACKEND=auto runs here (the daemon logs it too, at info level)."""
    from daemon.detect.backends import choose_backend
    from daemon.detect.model import resolve_device
    from daemon.settings import DEFAULT_MODEL

    return choose_backend(DEFAULT_MODEL, "auto", resolve_device("auto")).backend


def long_run(broker_url: str, scratch: Path, minutes: float, fps: int) -> dict[str, Any]:
    """The daemon on the time-stamping RTSP camera (bench/freshness.py) in frames mode: an event per frame with
    detections, so the same run also gives glass-to-MQTT age for its whole length."""
    port = free_port()
    camera = Camera(render_frames(scratch / "frames.bgr"), scratch / "camera.log", fps)
    received = Received(broker_url, ["linewatch/+/defects"])
    env = daemon_env(camera.url, broker_url, scratch / "state-long", port, LINEWATCH_EVENTS__MODE="frames")
    samples = []
    first_threads: dict[str, float] | None = None  # CPU per thread at the first sample, and at the last
    last_threads: dict[str, float] = {}
    try:
        with running_daemon(env) as process:
            wait_ready(port, process)
            started = time.monotonic()
            end = started + minutes * 60
            while True:
                figures = proc_figures(process.pid)
                last_threads = thread_cpu(process.pid)
                first_threads = first_threads or last_threads
                samples.append({"t_s": round(time.monotonic() - started, 1),
                                **{k: round(v, 2) for k, v in figures.items()},
                                "frames": metric(port, "linewatch_frames_inspected_total")})
                if time.monotonic() >= end:
                    break
                time.sleep(min(_SAMPLE_S, max(0.0, end - time.monotonic())))
    finally:
        items = received.close()
        camera.close()
    aligned, offset = align_daemon(items, camera.glass(), fps)
    t0 = aligned[0][0] if aligned else 0.0
    ages = [[round((at - t0) / 1000, 2), round(at - payload["stamp_ms"], 1)] for at, payload in aligned]
    return {"samples": samples, "ages": ages, "frame_seq_offset": offset,
            "thread_cpu_s": thread_cpu_delta(first_threads or {}, last_threads)}


def age_figures(ages: list[list[float]]) -> dict[str, Any]:
    values = [a for _, a in ages]
    if not values:
        return {}
    span = ages[-1][0]
    first = [a for t, a in ages if t < 60]
    last = [a for t, a in ages if t > span - 60]
    return {"n": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99),
            "first_minute_p99": percentile(first, 99), "last_minute_p99": percentile(last, 99),
            "slope_ms_per_min": round(slope_per_min([(t, a) for t, a in ages]), 2)}


def slope_per_min(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    denominator = sum((t - mean_t) ** 2 for t, _ in points) or 1e-9
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / denominator * 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--render", type=Path, help="keep the starts and the long run of a saved overhead.json; "
                        "measure the raw model and the per-frame pieces again, and summarise")
    args = parser.parse_args()
    if args.render:
        saved = json.loads(args.render.read_text())
        starts, run = saved["starts"], {"samples": saved["samples"], "ages": saved["ages"],
                                        "frame_seq_offset": saved["summary"]["frame_seq_offset"]}
        args.minutes, args.fps = saved["minutes"], saved["fps"]
    else:
        with tempfile.TemporaryDirectory() as tmp, broker() as mosquitto:
            scratch = Path(tmp)
            starts = []
            for _ in range(args.starts):  # the default, and one stream (one copy of the model) side by side
                starts.append({"streams": "auto", **start_to_ready(mosquitto.url, scratch)})
                starts.append({"streams": "1", **start_to_ready(mosquitto.url, scratch, LINEWATCH_MODEL__STREAMS="1")})
            print(json.dumps({"starts": starts}), flush=True)
            run = long_run(mosquitto.url, scratch, args.minutes, args.fps)
    backend = default_backend()
    raw = child_json([str(SCRIPT.parent / "efficiency.py"), "--child", "raw_streams", "--backend", backend, "--seconds",
                      "5", "--device", "auto"], timeout=300)
    costs = frame_costs.measure()
    report = {"benchmark": "overhead", "machine": describe(), "minutes": args.minutes, "fps": args.fps,
              "summary": summarise(starts, run, raw, backend), "frame_costs": costs, "starts": starts,
              "samples": run["samples"], "ages": run["ages"]}
    out = save("overhead", report, markdown(report))
    plot(report, out.with_suffix(".png"))
    return 0


def summarise(starts: list[dict[str, Any]], run: dict[str, Any], raw: dict[str, Any], backend: str) -> dict[str, Any]:
    samples = run["samples"]
    first, last = samples[0], samples[-1]
    frames = last["frames"] - first["frames"]
    cpu_per_frame = (last["cpu_s"] - first["cpu_s"]) * 1000 / frames if frames else None
    half = [s for s in samples if s["t_s"] >= last["t_s"] / 2]
    default = [s for s in starts if s.get("streams", "auto") == "auto"]
    one = [s for s in starts if s.get("streams") == "1"]
    return {
        "backend": backend,
        "start_to_ready_s": median([s["ready_s"] for s in default]),
        "start_to_ready_each_s": [s["ready_s"] for s in default],
        "rss_at_ready_mb": median([s["rss_at_ready_mb"] for s in default]),
        "one_stream_start_to_ready_s": median([s["ready_s"] for s in one]),
        "one_stream_rss_at_ready_mb": median([s["rss_at_ready_mb"] for s in one]),
        "peak_rss_mb": round(max(s["peak_rss_mb"] for s in samples), 1),
        "rss_first_mb": first["rss_mb"], "rss_last_mb": last["rss_mb"],
        "rss_slope_mb_per_min_second_half": round(slope_per_min([(s["t_s"], s["rss_mb"]) for s in half]), 3),
        "threads_first_last": [first["threads"], last["threads"]], "fds_first_last": [first["fds"], last["fds"]],
        "threads_max": max(s["threads"] for s in samples), "fds_max": max(s["fds"] for s in samples),
        "frames_per_s": round(frames / max(1e-9, last["t_s"] - first["t_s"]), 1),
        "cpu_ms_per_frame": round(cpu_per_frame, 2) if cpu_per_frame else None,
        "raw_model_cpu_ms_per_frame": round(raw["cpu_ms_per_frame"], 2),
        # where the process's CPU went, by the threads' names (pieces + other = the process total, from /proc)
        "cpu_account_ms_per_frame": {name: round(ms, 2) for name, ms in cpu_pieces(
            run.get("thread_cpu_s", {}), last["cpu_s"] - first["cpu_s"], frames).items()} if frames else {},
        "glass_to_mqtt_ms": age_figures(run["ages"]), "frame_seq_offset": run["frame_seq_offset"],
    }


def markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    machine = report["machine"]
    where = machine.get("gpu") or f"{machine.get('cpu_model')}, {machine.get('cpus')} CPUs"
    rows = [
        ("start to ready (median; each)", f"{s['start_to_ready_s']} s; {s.get('start_to_ready_each_s')}"),
        ("RSS at ready (median)", f"{s.get('rss_at_ready_mb')} MB"),
        ("one stream (LINEWATCH_MODEL__STREAMS=1): start to ready / RSS at ready (medians)",
         f"{s.get('one_stream_start_to_ready_s')} s / {s.get('one_stream_rss_at_ready_mb')} MB"),
        ("peak RSS", f"{s['peak_rss_mb']} MB"),
        ("RSS first / last", f"{s['rss_first_mb']} / {s['rss_last_mb']} MB"),
        ("RSS slope, second half", f"{s['rss_slope_mb_per_min_second_half']} MB/min"),
        ("threads first / last (max)", f"{s['threads_first_last']} ({s['threads_max']})"),
        ("open fds first / last (max)", f"{s['fds_first_last']} ({s['fds_max']})"),
        ("frames inspected per s", f"{s['frames_per_s']}"),
        ("process CPU per frame", f"{s['cpu_ms_per_frame']} ms"),
    ]
    account = s.get("cpu_account_ms_per_frame") or {}
    rows += [(f"  of which {name} (its threads, /proc)", f"{account[name]} ms") for name in PIECES if name in account]
    rows += [("raw model CPU per frame (full speed, its streams side by side: not the daemon's pace)",
              f"{s['raw_model_cpu_ms_per_frame']} ms")]
    ages = s["glass_to_mqtt_ms"]
    if ages:
        rows += [("glass to MQTT p50 / p99 (whole run)", f"{ages['p50']} / {ages['p99']} ms"),
                 ("glass to MQTT p99, first / last minute",
                  f"{ages['first_minute_p99']} / {ages['last_minute_p99']} ms"),
                 ("glass to MQTT trend", f"{ages['slope_ms_per_min']} ms/min"),
                 ("events received", f"{ages['n']}")]
    lines = [f"# Overhead on {where}, backend {s['backend']}", "",
             f"A {report['minutes']:g}-minute run: a live {report['fps']} fps RTSP camera stamping glass time into "
             "its frames (bench/stamp_camera.py), the daemon in frames mode, a real mosquitto and subscriber.",
             "", "| measure | value |", "|---|---:|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines) + "\n\n" + frame_costs.markdown(report["frame_costs"])


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = report["samples"]
    minutes = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
    ages = report.get("ages") or []
    axes[3].plot([t / 60 for t, _ in ages], [a for _, a in ages], ".", markersize=1)
    axes[3].set_title("glass to MQTT (ms)", fontsize=9)
    axes[3].set_xlabel("minutes")
    axes[3].set_ylim(bottom=0)
    axes[3].grid(alpha=0.3)
    for ax, key, label in zip(axes[:3], ("rss_mb", "threads", "fds"), ("RSS (MB)", "threads", "open fds"),
                              strict=True):
        ax.plot(minutes, [s[key] for s in samples], marker=".")
        ax.set_xlabel("minutes")
        ax.set_title(label, fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Overhead over {report['minutes']:g} min, backend {report['summary']['backend']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
