"""Soak: does the daemon's memory stay flat for an hour? Several synthetic cameras, snapshots on, a consumer on
the broker, and the broker flapping (down for a while, every few minutes); RSS, threads and open fds sampled
every second and plotted.

After a warm-up, the RSS trend over the second half of the run must be flat: its least-squares slope at most
0.02 MB/min (1.2 MB an hour), with threads and fds flat too. Frames in flight move RSS up and down by a few MB
from one second to the next, so the slope is fitted to every sample and reported with its standard error, and
also to each minute's lowest RSS (the floor, where a leak shows first).

`--compare` runs, side by side in the same run, a second daemon that leaves glibc's allocator at its defaults
(GLIBC_TUNABLES set, so daemon/ops/memory.py changes nothing): the measured cause of the growth.

    python bench/soak.py --compare             # 60 minutes, both (the figures in docs/benchmarks.md)
    python bench/soak.py --minutes 25          # the daemon alone
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from harness import daemon_env, free_port, mqtt_client, proc_figures, running_daemon, save, wait_ready
from machine import describe

from tests.support.mosquitto import Mosquitto

_SAMPLE_S = 1.0
LIMIT_MB_PER_MIN = 0.02


def camera_env(cameras: int, fps: int) -> dict[str, str]:
    env = {f"LINEWATCH_CAMERAS__CAM{i}__URL": f"synthetic://line?fps={fps}&seed={9400 + i}&defect_rate=0.6"
           for i in range(1, cameras + 1)}
    return {**env, "LINEWATCH_SNAPSHOTS__MODE": "both", "LINEWATCH_EVENTS__MODE": "defects"}


def slope(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(least-squares slope per minute, its standard error) of (seconds, value) points."""
    n = len(points)
    if n < 3:
        return 0.0, float("nan")
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    sxx = sum((t - mean_t) ** 2 for t, _ in points) or 1e-9
    b = sum((t - mean_t) * (v - mean_v) for t, v in points) / sxx
    residual = sum((v - mean_v - b * (t - mean_t)) ** 2 for t, v in points) / (n - 2)
    return b * 60, math.sqrt(residual / sxx) * 60


def minute_floors(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    floors: dict[int, float] = {}
    for t, v in points:
        floors[int(t // 60)] = min(v, floors.get(int(t // 60), v))
    return [(minute * 60 + 30, v) for minute, v in sorted(floors.items())]


class Flapper(threading.Thread):
    """Stops the broker for `down_s` every `every_s`, then starts it again on the same port and store."""

    def __init__(self, broker: Mosquitto, every_s: float, down_s: float) -> None:
        super().__init__(name="broker-flapper", daemon=True)
        self.broker, self.every_s, self.down_s = broker, every_s, down_s
        self.stop_event = threading.Event()
        self.outages = 0

    def run(self) -> None:
        while not self.stop_event.wait(self.every_s - self.down_s):
            self.broker.stop()
            self.outages += 1
            self.stop_event.wait(self.down_s)
            self.broker.start()


def summarise(samples: list[dict[str, float]], minutes: float, warmup_min: float) -> dict[str, Any]:
    after = [s for s in samples if s["t_s"] >= warmup_min * 60]
    half = [s for s in samples if s["t_s"] >= minutes * 30]
    rss = [(s["t_s"], s["rss_mb"]) for s in half]
    fit, error = slope(rss)
    floor_fit, floor_error = slope(minute_floors(rss))
    return {
        "samples": len(samples),
        "rss_at_warmup_mb": round(after[0]["rss_mb"], 1) if after else None,
        "rss_end_mb": round(samples[-1]["rss_mb"], 1) if samples else None,
        "peak_rss_mb": round(max(s["peak_rss_mb"] for s in samples), 1) if samples else None,
        "slope_second_half_mb_per_min": round(fit, 4), "slope_stderr": round(error, 4),
        "floor_slope_second_half_mb_per_min": round(floor_fit, 4), "floor_slope_stderr": round(floor_error, 4),
        "threads": [min(s["threads"] for s in after), max(s["threads"] for s in after)] if after else None,
        "fds": [min(s["fds"] for s in after), max(s["fds"] for s in after)] if after else None,
        "flat": abs(fit) <= LIMIT_MB_PER_MIN,
    }


def run(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    contenders = {"daemon": {}}
    if args.compare:
        contenders["glibc defaults"] = {"GLIBC_TUNABLES": "glibc.malloc.check=0"}  # the operator's: left alone
    broker = Mosquitto(workdir=scratch / "broker", persistence=True).start()
    consumed = [0]
    consumer = mqtt_client(broker.url, ["#"], lambda *_: consumed.__setitem__(0, consumed[0] + 1))
    flapper = Flapper(broker, args.flap_every_s, args.flap_down_s)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
    try:
        with ExitStack() as stack:
            processes = {}
            for index, (name, extra) in enumerate(contenders.items()):
                port = free_port()
                env = daemon_env("unused", broker.url, scratch / f"state-{index}", port,
                                 LINEWATCH_MQTT__TOPIC_PREFIX=f"soak{index}", **camera_env(args.cameras, args.fps),
                                 **extra)
                del env["LINEWATCH_CAMERA__URL"]
                processes[name] = stack.enter_context(running_daemon(env))
                wait_ready(port, processes[name], timeout=180)
            flapper.start()
            started = time.monotonic()
            end = started + args.minutes * 60
            while (now := time.monotonic()) < end:
                for name, process in processes.items():
                    figures = proc_figures(process.pid)
                    samples[name].append({"t_s": round(now - started, 1),
                                          **{k: round(v, 2) for k, v in figures.items()}})
                time.sleep(max(0.0, _SAMPLE_S - (time.monotonic() - now)))
            flapper.stop_event.set()
    finally:
        flapper.stop_event.set()
        consumer.loop_stop()
        broker.close()
    summary = {name: summarise(points, args.minutes, args.warmup_min) for name, points in samples.items()}
    return {"bench": "soak", "machine": describe(), "minutes": args.minutes, "cameras": args.cameras, "fps": args.fps,
            "snapshots": "both", "flap": {"every_s": args.flap_every_s, "down_s": args.flap_down_s,
                                          "outages": flapper.outages},
            "messages_consumed": consumed[0], "warmup_min": args.warmup_min, "limit_mb_per_min": LIMIT_MB_PER_MIN,
            "summary": summary, "samples": samples}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Soak: {report['minutes']:g} min, {report['cameras']} synthetic cameras at {report['fps']} fps, "
             f"snapshots on, the broker down {report['flap']['down_s']:g} s every {report['flap']['every_s']:g} s "
             f"({report['flap']['outages']} outages)", "",
             f"Machine: {report['machine'].get('cpu_model', '?')}, {report['machine'].get('cpus', '?')} CPUs. RSS "
             f"slope: least squares over the second half (1 sample/s), and over each minute's lowest RSS; the limit "
             f"is {report['limit_mb_per_min']} MB/min.", "",
             "| contender | RSS after warm-up | end | peak | slope (MB/min) | floor slope (MB/min) | threads | fds | "
             "flat |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, s in report["summary"].items():
        lines.append(f"| {name} | {s['rss_at_warmup_mb']} | {s['rss_end_mb']} | {s['peak_rss_mb']} | "
                     f"{s['slope_second_half_mb_per_min']:+.4f} ± {s['slope_stderr']:.4f} | "
                     f"{s['floor_slope_second_half_mb_per_min']:+.4f} ± {s['floor_slope_stderr']:.4f} | "
                     f"{s['threads'][0]}–{s['threads'][1]} | {s['fds'][0]}–{s['fds'][1]} | "
                     f"{'yes' if s['flat'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    for name, samples in report["samples"].items():
        minutes = [s["t_s"] / 60 for s in samples]
        for ax, key in zip(axes, ("rss_mb", "threads", "fds"), strict=True):
            ax.plot(minutes, [s[key] for s in samples], linewidth=0.8, label=name)
    for ax, label in zip(axes, ("RSS (MB)", "threads", "open fds"), strict=True):
        ax.set_xlabel("minutes")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
        ax.axvline(report["minutes"] / 2, color="grey", linewidth=0.6, linestyle="--")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Soak over {report['minutes']:g} min (dashed: the second half, where the slope is fitted)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--warmup-min", type=float, default=5.0)
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--flap-every-s", type=float, default=180.0)
    parser.add_argument("--flap-down-s", type=float, default=20.0)
    parser.add_argument("--compare", action="store_true", help="also run a daemon with glibc's allocator defaults")
    args = parser.parse_args()
    with TemporaryDirectory(prefix="linewatch-soak-") as scratch:
        report = run(args, Path(scratch))
    out = save("soak", report, markdown(report))
    plot(report, out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
