"""The box's limit: the daemon against a bare loop that decodes the same frames and runs the same model at its best,
with nothing else, side by side in one run.

    .venv/bin/python bench/box_limit.py [--backends openvino,onnx] [--cameras 1,4] [--pairs 10] [--window 2.5]

Over the same frames (an MJPG video of the synthetic line, 640x480, read at full speed, looped), per backend and
number of cameras N:
- bare: per camera one thread decodes the video with the daemon's own file source (OpenCV's FFmpeg, into reused
  buffers) and letterboxes each frame (Detector.prepare, the capture stage's own call) into a queue; the model's
  streams, each its own thread and copy of the model (LINEWATCH_MODEL__STREAMS, as the daemon picks them), take
  what is waiting, up to --bare-batch frames (4) in one inference (Detector.infer_frames: forward pass, NMS,
  boxes): the model at its best here, where a batch of 4 beat one frame at a time by 12 % (OpenVINO, 1 and 4
  cameras; ONNX 7 %) and a batch of 8 gained nothing more. No events, no outbox, no MQTT, no metrics: what this
  box can decode and infer;
- daemon: `python -m daemon run` with N cameras on the same video (pace=max, loop), publishing to a real
  mosquitto in its default mode; frames inspected per second from its /metrics.

Both are started and warmed up once, then take turns on the whole box: only one runs at a time (the other is held
with SIGSTOP), in short alternating slices, bare, daemon, bare, daemon, ... bare. Each slice lets the process settle
for a moment after it resumes, then counts the frames it inspects over a fixed window. Each daemon slice's ratio is
taken against the mean of the two bare slices around it, so a VM whose speed drifts by 15 % over a minute (this
project's CI machines do) moves both sides alike; the median of those ratios is quoted with its spread (the
target: 0.9x or better). Process CPU per frame is reported for both (from /proc), and per thread by the threads'
kernel names (the daemon names each stage's thread; threads a library starts inherit the name of the thread that
started them, so a decoder's own threads count as its camera's capture). Saves bench/results/box_limit.{json,md,png}.

`--child` runs the bare loop alone for `--seconds` and prints its figures (bench/cpu_account.py uses it).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import (
    PYTHON,
    REPO,
    broker,
    child_env,
    free_port,
    full_speed_env,
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
SETTLE_S = 0.5  # after a resume, before counting: caches refill, frames in flight when it was held finish


class BareLoop:
    """Decode threads (one per camera) and the model's streams, each its own thread, joined by a queue."""

    def __init__(self, backend: str, video: str, cameras: int, count: Callable[[int, int], None],
                 batch: int = 1) -> None:
        from daemon.detect.model import Detector
        from daemon.settings import DEFAULT_MODEL, ModelSettings

        self.detector = Detector(ModelSettings(path=DEFAULT_MODEL, backend=backend, device="cpu"))
        self.detector.warm_up(640, 480, 3)
        self._video, self._count, self._batch = video, count, batch
        self._frames: queue.Queue[Any] = queue.Queue(maxsize=2 * batch * self.detector.streams)
        self._done = threading.Event()
        self._threads = [threading.Thread(target=self._decode, args=(n,), daemon=True) for n in range(cameras)]
        self._threads += [threading.Thread(target=self._infer, args=(n,), daemon=True)
                          for n in range(self.detector.streams)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join(5)

    def _decode(self, camera: int) -> None:
        import numpy as np

        from daemon.buffers import BufferPool
        from daemon.frames import Frame, utc_now
        from daemon.lifecycle import name_native_thread
        from daemon.sources.factory import SourceOptions, build_source
        from daemon.sources.url import parse_camera_url

        name_native_thread(f"decode-{camera}")
        # The daemon's own source for the URL: a looped video read at full speed, or a live camera at its pace
        source = build_source(parse_camera_url(self._video), SourceOptions(loop=True, realtime=False))
        buffers, seq = BufferPool(), 0
        source.open()
        while not self._done.is_set():
            image = source.read()
            if not isinstance(image, np.ndarray):  # a looped file or a live camera never ends
                raise RuntimeError(f"{self._video} ended")
            image.setflags(write=False)
            frame = Frame(f"c{camera}", seq, image, time.monotonic(), utc_now(), self.detector.prepare(image, buffers))
            seq += 1
            while not self._done.is_set():
                try:
                    self._frames.put(frame, timeout=0.1)
                    break
                except queue.Full:
                    continue
        source.close()

    def _infer(self, stream: int) -> None:
        from daemon.lifecycle import name_native_thread

        name_native_thread(f"infer-{stream}")
        while not self._done.is_set():
            try:
                frames = [self._frames.get(timeout=0.1)]
            except queue.Empty:
                continue
            while len(frames) < self._batch:  # what else is waiting, up to the batch: one inference for them all
                try:
                    frames.append(self._frames.get_nowait())
                except queue.Empty:
                    break
            self.detector.infer_frames(frames, stream)
            self._count(stream, len(frames))


def child_alone(args: argparse.Namespace) -> dict[str, Any]:
    """The bare loop for `--seconds` after a warm-up, alone: its figures (bench/cpu_account.py)."""
    counts = [0] * 64

    def count(stream: int, frames: int) -> None:
        counts[stream] += frames

    loop = BareLoop(args.backend, args.video, args.cameras, count, args.batch)
    loop.start()
    time.sleep(WARM_S)
    before, cpu0, threads0, started = sum(counts), time.process_time(), thread_cpu(os.getpid()), time.monotonic()
    time.sleep(args.seconds)
    inspected, cpu, elapsed = sum(counts) - before, time.process_time() - cpu0, time.monotonic() - started
    by_thread = thread_cpu_delta(threads0, thread_cpu(os.getpid()))
    loop.stop()
    return {"fps": inspected / elapsed, "cpu_ms_per_frame": cpu * 1000 / max(1, inspected),
            "streams": loop.detector.streams, "threads": loop.detector.threads,
            "thread_ms_per_frame": per_frame(by_thread, inspected)}


def child_serve(args: argparse.Namespace) -> None:
    """The bare loop until stdin closes, counting inspected frames into `--counts` (one int64 per stream) for the
    parent to read while it holds and resumes this process."""
    import numpy as np

    shared = np.memmap(args.counts, dtype=np.int64, mode="r+", shape=(64,))

    def count(stream: int, frames: int) -> None:
        shared[stream] += frames  # one writer per slot: the stream's own thread

    loop = BareLoop(args.backend, args.video, args.cameras, count, args.batch)
    loop.start()
    time.sleep(WARM_S)
    print(json.dumps({"ready": True, "streams": loop.detector.streams, "threads": loop.detector.threads}),
          flush=True)
    sys.stdin.read()  # the parent closes it: done
    loop.stop()


def per_frame(by_thread: dict[str, float], frames: float) -> dict[str, float]:
    """ms per frame by thread name, every thread listed: an idle one (the publisher in a short defects-mode run
    spends less than the kernel's 10 ms tick) shows as 0."""
    return {name: round(cpu * 1000 / max(1.0, frames), 3) for name, cpu in sorted(by_thread.items())}


@contextmanager
def held(pid: int) -> Iterator[None]:
    """The process runs inside this block only (SIGCONT, then SIGSTOP at the end)."""
    os.kill(pid, signal.SIGCONT)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGSTOP)


def measure(pid: int, frames: Callable[[], float], window: float) -> dict[str, Any]:
    """One slice: resume, settle, count over `window`, hold again."""
    with held(pid):
        time.sleep(SETTLE_S)
        frames0, cpu0, threads0, started = frames(), proc_figures(pid)["cpu_s"], thread_cpu(pid), time.monotonic()
        time.sleep(window)
        frames1, cpu1, threads1, elapsed = frames(), proc_figures(pid)["cpu_s"], thread_cpu(pid), \
            time.monotonic() - started
    return {"frames": frames1 - frames0, "fps": (frames1 - frames0) / elapsed, "cpu_s": cpu1 - cpu0,
            "threads_s": thread_cpu_delta(threads0, threads1)}


@contextmanager
def bare_loop(backend: str, video: Path, cameras: int, scratch: Path,
              batch: int = 1) -> Iterator[tuple[int, Callable[[], float]]]:
    import numpy as np

    counts = scratch / f"counts-{backend}-{cameras}-{batch}"
    np.memmap(counts, dtype=np.int64, mode="w+", shape=(64,)).flush()
    child = subprocess.Popen([PYTHON, str(SCRIPT), "--child", "--serve", "--backend", backend, "--video", str(video),
                              "--cameras", str(cameras), "--counts", str(counts), "--batch", str(batch)], cwd=REPO,
                             env=child_env(),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        while not (line := child.stdout.readline()).startswith('{"ready"'):  # the daemon's log lines come first
            if not line:
                raise RuntimeError(f"the bare loop exited {child.wait()} before it was ready")
        shared = np.memmap(counts, dtype=np.int64, mode="r", shape=(64,))
        yield child.pid, lambda: float(shared.sum())
    finally:
        os.kill(child.pid, signal.SIGCONT)
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@contextmanager
def daemon_loop(backend: str, video: Path, broker_url: str, cameras: int,
                state: Path) -> Iterator[tuple[int, Callable[[], float]]]:
    port = free_port()
    with running_daemon(full_speed_env(video, broker_url, state, port, backend, cameras)) as process:
        try:
            wait_ready(port, process)
            time.sleep(WARM_S)
            yield process.pid, lambda: metric(port, "linewatch_frames_inspected_total")
        finally:
            os.kill(process.pid, signal.SIGCONT)  # so that it can take its SIGTERM
        if process.returncode is not None:
            raise RuntimeError(f"the daemon exited {process.returncode} during the run")


def compare(backend: str, video: Path, broker_url: str, cameras: int, pairs: int, window: float,
            scratch: Path, bare_batch: int) -> dict[str, Any]:
    """Start both, then take turns: bare, daemon, bare, ... bare (pairs daemon slices)."""
    with tempfile.TemporaryDirectory(dir=scratch) as state, \
            bare_loop(backend, video, cameras, scratch, bare_batch) as (bare_pid, bare_frames):
        os.kill(bare_pid, signal.SIGSTOP)
        with daemon_loop(backend, video, broker_url, cameras, Path(state)) as (daemon_pid, daemon_frames):
            os.kill(daemon_pid, signal.SIGSTOP)
            bare = [measure(bare_pid, bare_frames, window)]
            daemon = []
            for _ in range(pairs):
                daemon.append(measure(daemon_pid, daemon_frames, window))
                bare.append(measure(bare_pid, bare_frames, window))
                print(f"  {backend} x{cameras}: bare {bare[-2]['fps']:.1f} daemon {daemon[-1]['fps']:.1f} "
                      f"bare {bare[-1]['fps']:.1f} fps", flush=True)
    ratios = [d["fps"] / ((b0["fps"] + b1["fps"]) / 2) for d, b0, b1 in zip(daemon, bare, bare[1:], strict=False)]
    p25, p50, p75 = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3
    return with_pooled({"backend": backend, "cameras": cameras, "ratios": [round(r, 4) for r in ratios],
                        "ratio": p50, "ratio_p25": p25, "ratio_p75": p75, "bare": summarise(bare),
                        "daemon": summarise(daemon)})


def with_pooled(row: dict[str, Any]) -> dict[str, Any]:
    """Two more views of the same slices: every daemon frame against every bare frame (the windows are equal),
    and bare CPU per frame against the daemon's (both saturate the box, so this is the efficiency alone)."""
    bare, daemon = row["bare"], row["daemon"]
    row["pooled"] = statistics.fmean(daemon["fps_each"]) / statistics.fmean(bare["fps_each"])
    row["cpu_ratio"] = bare["cpu_ms_per_frame"] / daemon["cpu_ms_per_frame"]
    return row


def summarise(slices: list[dict[str, Any]]) -> dict[str, Any]:
    """Median fps over the slices; CPU per frame over all of them together (the kernel counts in 10 ms ticks)."""
    frames = sum(s["frames"] for s in slices)
    threads: dict[str, float] = {}
    for piece in slices:
        for name, cpu in piece["threads_s"].items():
            threads[name] = threads.get(name, 0.0) + cpu
    return {"fps": median([s["fps"] for s in slices]), "fps_each": [round(s["fps"], 2) for s in slices],
            "cpu_ms_per_frame": sum(s["cpu_s"] for s in slices) * 1000 / max(1.0, frames),
            "thread_ms_per_frame": per_frame(threads, frames)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="openvino,onnx")
    parser.add_argument("--cameras", default="1,4")
    parser.add_argument("--pairs", type=int, default=10, help="daemon slices per configuration")
    parser.add_argument("--window", type=float, default=2.5, help="seconds counted per slice")
    parser.add_argument("--bare-batch", type=int, default=4,
                        help="frames the bare loop's streams take per inference, at most (what is waiting)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=10.0, help=argparse.SUPPRESS)  # --child alone
    parser.add_argument("--counts", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--video", help=argparse.SUPPRESS)  # a file or a camera's URL
    args = parser.parse_args()
    if args.child:
        args.cameras = int(args.cameras)
        if args.serve:
            child_serve(args)
        else:
            print(json.dumps(child_alone(args)))
        return 0
    backends, counts = args.backends.split(","), [int(n) for n in args.cameras.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, broker() as mosquitto:
        scratch = Path(tmp)
        video = write_line_video(scratch / "line.avi", frames=600)
        for backend in backends:
            for cameras in counts:
                rows.append(compare(backend, video, mosquitto.url, cameras, args.pairs, args.window, scratch,
                                    args.bare_batch))
                row = rows[-1]
                print(f"{backend} x{cameras}: daemon / bare {row['ratio']:.3f} "
                      f"({row['ratio_p25']:.3f}-{row['ratio_p75']:.3f})", flush=True)
    report = {"benchmark": "box_limit", "machine": describe(), "pairs": args.pairs, "window_s": args.window,
              "settle_s": SETTLE_S, "bare_batch": args.bare_batch, "rows": rows}
    out = save("box_limit", report, render(report))
    plot(rows, out.with_suffix(".png"))
    return 0


def render(report: dict[str, Any]) -> str:
    machine, rows, pairs = report["machine"], report["rows"], report["pairs"]
    return (f"# The box's limit: the daemon against a bare decode + model loop\n\nMachine: {machine['cpu_model']}, "
            f"{machine['cpus']} CPUs. The same 640x480 MJPG video at full speed for both. Both processes started "
            f"once; the bare loop's streams take up to {report.get('bare_batch', 1)} waiting frames per inference. "
            f"They take turns on the box (the other held with SIGSTOP): {pairs} daemon slices between "
            f"{pairs + 1} bare slices, each counted over {report['window_s']:g} s after {report['settle_s']:g} s to "
            "settle. daemon / bare: each daemon slice against the mean of the bare slices either side of it, median "
            "(25th-75th percentile); pooled: all daemon frames against all bare frames; CPU: bare CPU per frame "
            "against the daemon's.\n\n"
            "| backend | cameras | bare loop fps | daemon fps | daemon / bare | pooled | CPU | bare CPU ms/frame "
            "| daemon CPU ms/frame |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
            + "".join(f"| {r['backend']} | {r['cameras']} | {r['bare']['fps']:.1f} | {r['daemon']['fps']:.1f} | "
                      f"{r['ratio']:.2f}x ({r['ratio_p25']:.2f}-{r['ratio_p75']:.2f}) | {r['pooled']:.2f}x | "
                      f"{r['cpu_ratio']:.2f}x | {r['bare']['cpu_ms_per_frame']:.2f} | "
                      f"{r['daemon']['cpu_ms_per_frame']:.2f} |\n" for r in rows)
            + "\nCPU per frame by thread (ms):\n\n"
            + "".join(f"- {r['backend']} x{r['cameras']}: bare {threads_line(r['bare'])}; daemon "
                      f"{threads_line(r['daemon'])}\n" for r in rows))


def threads_line(side: dict[str, Any]) -> str:
    return ", ".join(f"{name} {ms:.2f}" for name, ms in side["thread_ms_per_frame"].items() if ms >= 0.005)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (fps_axis, ratio_axis) = plt.subplots(1, 2, figsize=(11, 4))
    keys = [f"{r['backend']}\n{r['cameras']} camera{'s' if r['cameras'] > 1 else ''}" for r in rows]
    positions = list(range(len(rows)))
    fps_axis.bar([p - 0.2 for p in positions], [r["bare"]["fps"] for r in rows], 0.4, label="bare loop")
    fps_axis.bar([p + 0.2 for p in positions], [r["daemon"]["fps"] for r in rows], 0.4, label="daemon")
    fps_axis.set_xticks(positions, keys)
    fps_axis.set_ylabel("frames inspected per second (median slice)")
    fps_axis.legend()
    fps_axis.grid(alpha=0.3, axis="y")
    for position, row in zip(positions, rows, strict=True):
        ratio_axis.scatter([position] * len(row["ratios"]), row["ratios"], alpha=0.5, color="tab:blue")
        ratio_axis.scatter([position], [row["ratio"]], marker="_", s=600, color="black")
    ratio_axis.axhline(0.9, color="tab:red", linestyle="--", label="target 0.9x")
    ratio_axis.set_xticks(positions, keys)
    ratio_axis.set_ylabel("daemon / bare, each slice (bar: median)")
    ratio_axis.legend()
    ratio_axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
