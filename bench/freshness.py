"""Freshness: how old a frame is when its result reaches a real MQTT subscriber ("glass to MQTT").

    .venv/bin/python bench/freshness.py [--seconds 60] [--fps 30] [--backend auto]

The camera is a live RTSP server (bench/stamp_camera.py, GStreamer, H.264) looping frames of the synthetic
line at --fps, most of them with defects, that stamps the wall-clock time into every frame just before it
is encoded. Contenders, each against its own fresh camera and the same real mosquitto:
- floor: a plain OpenCV reader that publishes each frame's stamp at once (no model): the camera path;
- daemon: `python -m daemon run` in frames mode (LINEWATCH_EVENTS__MODE=frames: one event per frame with
  detections), defaults otherwise. An event names its frame_seq; the camera logged the stamp of each frame
  it pushed to that client, counter from 0, so the glass time of frame_seq n is the camera's n-th stamp.
  The daemon's own `captured_at` minus that stamp must match the floor reader's age: the bench checks the
  alignment by it;
- naive: `cv2.VideoCapture.read -> model.predict -> paho publish`, one frame at a time;
- stream: Ultralytics' `model.predict(source=rtsp, stream=True)` with a paho publish per result.
The loops read the stamp from the pixels they inferred on. Age = the subscriber's receive time minus the
stamp. Reports p50/p95/p99 over the window after a warm-up, the trend (a least-squares slope, ms per minute,
and the p50 of the first and last 10 s), and a PNG of age over time. Saves bench/results/freshness.*.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from harness import broker, child_json, daemon_env, free_port, mqtt_client, percentile, running_daemon, save, wait_ready
from machine import describe

os.environ.setdefault("YOLO_OFFLINE", "1")
SCRIPT = Path(__file__).resolve()
CONTENDERS = ("floor", "daemon", "naive", "stream")
_WARM_S = 5.0
_BITS, _BLOCK_W = 64, 10


# -- the stamp ------------------------------------------------------------------------------------------------
def read_stamp(image: Any) -> tuple[int, int] | None:
    """(counter, ms) from the top band (bench/stamp_camera.py), or None when the two copies disagree."""
    gray = image[:32, : _BITS * _BLOCK_W].mean(axis=2)
    copies = []
    for top in (4, 20):
        band = gray[top:top + 8]
        bits = [band[:, i * _BLOCK_W + 3:i * _BLOCK_W + 7].mean() > 127 for i in range(_BITS)]
        copies.append(sum(1 << i for i, bit in enumerate(bits) if bit))
    if copies[0] != copies[1]:
        return None
    return copies[0] & 0xFFFFF, copies[0] >> 20


def render_frames(path: Path, count: int = 90, width: int = 640, height: int = 480) -> Path:
    from daemon.synthetic.line import LineParams, SyntheticLine

    line = SyntheticLine(LineParams(seed=9400, defect_rate=0.7, width=width, height=height))
    with path.open("wb") as out:
        for index in range(count):
            out.write(line.render(index).image.tobytes())
    return path


class Camera:
    def __init__(self, frames: Path, log: Path, fps: int, width: int = 640, height: int = 480) -> None:
        self.log = log
        self.proc = subprocess.Popen(["/usr/bin/python3", str(SCRIPT.parent / "stamp_camera.py"), "--frames",
                                      str(frames), "--log", str(log), "--fps", str(fps), "--width", str(width),
                                      "--height", str(height)],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("READY "):
            raise RuntimeError(f"the camera did not start: {line!r}")
        self.url = line.split()[1]

    def glass(self) -> dict[int, int]:
        return {int(c): int(ms) for c, ms in (line.split() for line in self.log.read_text().splitlines())}

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Received:
    """A real subscriber: every message's receive time (ms since the epoch) and JSON payload."""

    def __init__(self, url: str, topics: list[str]) -> None:
        self.items: list[tuple[float, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self.client = mqtt_client(url, topics, self._on_message)

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        received = time.time() * 1000
        with self._lock:
            self.items.append((received, json.loads(message.payload)))

    def close(self) -> list[tuple[float, dict[str, Any]]]:
        self.client.loop_stop()
        self.client.disconnect()
        return self.items


# -- the loops, in a child process ----------------------------------------------------------------------------
def child(args: argparse.Namespace) -> dict[str, Any]:
    import cv2

    client = mqtt_client(args.broker)
    deadline = time.monotonic() + args.seconds + _WARM_S
    unreadable = published = 0

    def frames() -> Any:
        if args.child == "stream":
            from ultralytics import YOLO

            model = YOLO(args.weights, task="detect")
            for result in model.predict(source=args.url, stream=True, imgsz=320, verbose=False):
                yield result.orig_img
            return
        model = None
        if args.child == "naive":
            from ultralytics import YOLO

            model = YOLO(args.weights, task="detect")
        # The floor reads at its best: one decoder thread (FFmpeg's frame threading holds a frame back per extra
        # thread); the naive loop as a user writes it.
        params = [cv2.CAP_PROP_N_THREADS, 1] if args.child == "floor" else []
        capture = cv2.VideoCapture(args.url, cv2.CAP_FFMPEG, params)
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            if model is not None:
                model.predict(frame, imgsz=320, verbose=False)
            yield frame

    for image in frames():
        stamp = read_stamp(image)
        if stamp is None:
            unreadable += 1
        else:
            client.publish("bench/freshness", json.dumps({"counter": stamp[0], "stamp_ms": stamp[1]}), qos=1)
            published += 1
        if time.monotonic() >= deadline:
            break
    client.loop_stop()
    answer = {"published": published, "unreadable": unreadable}
    if args.child == "stream":  # Ultralytics' stream reader thread would keep the process alive
        print(json.dumps(answer), flush=True)
        os._exit(0)
    return answer


def run_contender(name: str, frames: Path, scratch: Path, broker_url: str, args: argparse.Namespace,
                  weights: str) -> dict[str, Any]:
    camera = Camera(frames, scratch / f"{name}.log", args.fps)
    received = Received(broker_url, ["bench/freshness", "linewatch/+/defects"])
    try:
        if name == "daemon":
            port = free_port()
            env = daemon_env(camera.url, broker_url, scratch / "state", port, LINEWATCH_EVENTS__MODE="frames",
                             LINEWATCH_MODEL__BACKEND=args.backend)
            with running_daemon(env) as process:
                wait_ready(port, process)
                time.sleep(args.seconds + _WARM_S)
        else:
            child_args = [str(SCRIPT), "--child", name, "--url", camera.url, "--broker", broker_url,
                          "--seconds", str(args.seconds), "--weights", weights]
            child_json(child_args, timeout=args.seconds + 180)
    finally:
        items = received.close()
        camera.close()
    glass = camera.glass()
    offset = None
    if name == "daemon":
        items, offset = align_daemon(items, glass, args.fps)
    arrivals = [received_ms for received_ms, _ in items]
    t0 = min(arrivals) / 1000 if arrivals else 0.0  # each contender's clock starts at its first result
    samples = [(received_ms / 1000 - t0, received_ms - payload["stamp_ms"]) for received_ms, payload in items]
    window = [(t, age) for t, age in samples if t >= _WARM_S]
    return {"contender": name, "samples": [[round(t, 3), round(a, 1)] for t, a in window],
            "frame_seq_offset": offset,
            "capture_age_p50_ms": percentile([p["capture_age_ms"] for _, p in items if "capture_age_ms" in p], 50)}


def align_daemon(items: list[tuple[float, dict[str, Any]]], glass: dict[int, int], gop: int) -> tuple[
        list[tuple[float, dict[str, Any]]], int | None]:
    """Give each daemon event the glass stamp of its frame. The daemon's RTSP reader (fflags nobuffer, a short
    probe) starts decoding at a keyframe after connecting, so its frame_seq n is the camera's frame n + k, k a
    whole number of GOPs (--fps frames). The one k that puts its capture age (captured_at minus glass) between
    0 and one GOP is the alignment: k one GOP smaller adds a second, one larger makes frames older than glass."""
    from datetime import datetime

    captured = [(received, payload, datetime.fromisoformat(payload["captured_at"].replace("Z", "+00:00"))
                 .timestamp() * 1000) for received, payload in items if "frame_seq" in payload]
    for k in range(0, 20 * gop, gop):  # the camera's keyframe interval is one second: gop = fps frames
        ages = [at - glass[p["frame_seq"] + k] for _, p, at in captured if p["frame_seq"] + k in glass]
        if ages and 0 < (percentile(ages, 50) or 0) < 1000:
            aligned = [(received, {**p, "stamp_ms": glass[p["frame_seq"] + k],
                                   "capture_age_ms": at - glass[p["frame_seq"] + k]})
                       for received, p, at in captured if p["frame_seq"] + k in glass]
            return aligned, k
    raise RuntimeError("cannot align the daemon's frame_seq with the camera's frames")


def stats(row: dict[str, Any]) -> dict[str, Any]:
    times = [t for t, _ in row["samples"]]
    ages = [a for _, a in row["samples"]]
    if len(ages) < 3:
        return {"n": len(ages)}
    mean_t, mean_a = sum(times) / len(times), sum(ages) / len(ages)
    slope = (sum((t - mean_t) * (a - mean_a) for t, a in zip(times, ages, strict=True))
             / max(1e-9, sum((t - mean_t) ** 2 for t in times)))
    first = [a for t, a in row["samples"] if t < times[0] + 10]
    last = [a for t, a in row["samples"] if t > times[-1] - 10]
    return {"n": len(ages), "p50": percentile(ages, 50), "p95": percentile(ages, 95), "p99": percentile(ages, 99),
            "slope_ms_per_min": round(slope * 60, 1), "first_10s_p50": percentile(first, 50),
            "last_10s_p50": percentile(last, 50), "capture_age_p50_ms": row["capture_age_p50_ms"],
            "frame_seq_offset": row["frame_seq_offset"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="window per contender, after a 5 s warm-up")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--backend", default="auto", help="the daemon's LINEWATCH_MODEL__BACKEND; the loops run "
                        "the same file")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--child", choices=("floor", "naive", "stream"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--broker", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0

    from daemon.detect.backends import choose_backend
    from daemon.detect.model import resolve_device
    from daemon.settings import DEFAULT_MODEL

    device = resolve_device("auto")
    choice = choose_backend(DEFAULT_MODEL, args.backend, device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, broker() as mosquitto:
        scratch = Path(tmp)
        frames = render_frames(scratch / "frames.bgr")
        for name in args.contenders.split(","):
            rows.append(run_contender(name, frames, scratch, mosquitto.url, args, str(choice.path)))
            print(json.dumps({"contender": name, **stats(rows[-1])}), flush=True)
    summary = {row["contender"]: stats(row) for row in rows}
    ratio = None
    if summary.get("daemon", {}).get("p99") and summary.get("stream", {}).get("p99"):
        ratio = round(summary["daemon"]["p99"] / summary["stream"]["p99"], 3)
    report = {"benchmark": "freshness", "machine": describe(), "device": device, "backend": choice.backend,
              "fps": args.fps, "seconds": args.seconds, "summary": summary, "daemon_p99_over_stream_p99": ratio,
              "rows": rows}
    out = save("freshness", report, markdown(report))
    plot(report, out.with_suffix(".png"))
    return 0


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    where = machine.get("gpu") or f"{machine.get('cpu_model')}, {machine.get('cpus')} CPUs"
    lines = [f"# Freshness on {where}: glass to MQTT subscriber, {report['fps']} fps RTSP camera, "
             f"backend {report['backend']}", "",
             f"{report['seconds']:g} s per contender after a {_WARM_S:g} s warm-up; ages in ms.", "",
             "| contender | results | p50 | p95 | p99 | trend ms/min | first 10 s p50 | last 10 s p50 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in report["summary"].items():
        lines.append(f"| {name} | {row['n']} | {row.get('p50')} | {row.get('p95')} | {row.get('p99')} | "
                     f"{row.get('slope_ms_per_min')} | {row.get('first_10s_p50')} | {row.get('last_10s_p50')} |")
    daemon = report["summary"].get("daemon", {})
    lines += ["", f"daemon p99 / Ultralytics stream p99: **{report['daemon_p99_over_stream_p99']}**",
              f"alignment check: the daemon's capture age p50 {daemon.get('capture_age_p50_ms')} ms "
              f"(its captured_at minus the glass stamp of its frame_seq) against the floor reader's whole "
              f"glass-to-MQTT p50 {report['summary'].get('floor', {}).get('p50')} ms"]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    for row in report["rows"]:
        if row["samples"]:
            ax.plot([t for t, _ in row["samples"]], [a for _, a in row["samples"]], ".", markersize=2,
                    label=row["contender"])
    ax.set_xlabel("seconds since the contender was ready")
    ax.set_ylabel("glass to MQTT (ms)")
    ax.set_title(f"Freshness, {report['fps']} fps RTSP, backend {report['backend']}", fontsize=9)
    ax.legend(markerscale=5, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
