"""What the benchmarks share: a real mosquitto, the daemon as a real process with its /metrics, /proc figures
of a process, the same frames for every contender, and the saving of results (JSON, markdown, PNG).

The broker and the daemon process come from the test harness (tests/support), so a benchmark runs the same
real parts as the tests: `python bench/<name>.py` from the repository root.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.mosquitto import Mosquitto  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.procs import DaemonProcess  # noqa: E402

PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
BACKENDS = ("pt", "onnx", "openvino", "engine")


@contextmanager
def broker() -> Iterator[Mosquitto]:
    with Mosquitto(persistence=False) as mosquitto:  # entering starts it
        yield mosquitto


def available_backends(device: str) -> list[str]:
    """The backends of the shipped model this machine can run: its exports, their runtimes, the engine on CUDA."""
    from daemon.detect.backends import BackendError, choose_backend
    from daemon.settings import DEFAULT_MODEL

    usable = []
    for backend in BACKENDS:
        if backend == "engine" and not device.startswith("cuda"):
            continue
        try:
            choose_backend(DEFAULT_MODEL, backend, device)
        except BackendError:
            continue
        usable.append(backend)
    return usable


def weights_for(backend: str) -> Path:
    from daemon.detect.backends import export_path
    from daemon.settings import DEFAULT_MODEL

    return export_path(DEFAULT_MODEL, backend)


def mqtt_client(url: str, topics: Sequence[str] = (), on_message: Any = None) -> Any:
    """A started paho client on mqtt://host:port (its network loop on its own thread), subscribed to `topics`
    at QoS 1 on every connect."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    host, port = url.removeprefix("mqtt://").split(":")
    client = paho.Client(CallbackAPIVersion.VERSION2)
    if on_message is not None:
        client.on_message = on_message
    if topics:
        client.on_connect = lambda connected, *_: [connected.subscribe(t, qos=1) for t in topics]
    client.connect(host, int(port))
    client.loop_start()
    return client


def daemon_env(camera_url: str, broker_url: str, state: Path, http_port: int, **extra: str) -> dict[str, str]:
    return {"LINEWATCH_CAMERA__URL": camera_url, "LINEWATCH_MQTT__URL": broker_url,
            "LINEWATCH_OUTBOX__DIR": str(state), "LINEWATCH_HTTP__PORT": str(http_port),
            "LINEWATCH_HTTP__HOST": "127.0.0.1", "LINEWATCH_LOG__FORMAT": "json", "LINEWATCH_LOG__LEVEL": "warning",
            "YOLO_OFFLINE": "1", **extra}


def full_speed_env(video: Path, broker_url: str, state: Path, http_port: int, backend: str,
                   cameras: int) -> dict[str, str]:
    """The daemon with `cameras` cameras all reading the same video at full speed, looped, on the CPU."""
    each = {f"LINEWATCH_CAMERAS__C{n}__{key}": value for n in range(cameras)
            for key, value in (("URL", str(video)), ("PACE", "max"), ("LOOP", "true"))}
    env = daemon_env("", broker_url, state, http_port, LINEWATCH_MODEL__BACKEND=backend,
                     LINEWATCH_MODEL__DEVICE="cpu", **each)
    del env["LINEWATCH_CAMERA__URL"]
    return env


@contextmanager
def running_daemon(env: Mapping[str, str]) -> Iterator[DaemonProcess]:
    process = DaemonProcess(env).start()
    try:
        yield process
    finally:
        process.close(grace_s=10.0)


def wait_ready(port: int, process: DaemonProcess, timeout: float = 120.0) -> float:
    """Poll /readyz until 200 (a benchmark, not a test: polling is the measurement). Returns when it answered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"the daemon exited {process.returncode}: {process.stderr_text[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
                if answer.status == 200:
                    return time.monotonic()
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"the daemon was not ready within {timeout} s")


def metric(port: int, name: str) -> float:
    """The sum of a metric's samples over all its labels, from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name)] in " {")


def proc_figures(pid: int) -> dict[str, float]:
    """RSS and peak RSS (MB), threads, open file descriptors and CPU seconds of a live process, from /proc."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return {"rss_mb": int(status["VmRSS"].split()[0]) / 1024, "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024,
            "threads": int(status["Threads"]), "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "cpu_s": (int(stat[11]) + int(stat[12])) / CLK_TCK}


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (the kernel's: the daemon names each stage's thread, see
    daemon.lifecycle.name_native_thread), summed over the threads that share a name, from /proc/<pid>/task.
    A thread that ended before the read is missing: take differences over a steady run."""
    totals: dict[str, float] = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = Path(f"/proc/{pid}/task/{task}/comm").read_text().strip()
            stat = Path(f"/proc/{pid}/task/{task}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended between the listing and the read
        totals[comm] = totals.get(comm, 0.0) + (int(stat[11]) + int(stat[12])) / CLK_TCK
    return totals


def thread_cpu_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


PIECES = ("capture", "detect", "events", "publish", "other")


def piece_of(thread: str) -> str:
    """Which piece of the account a daemon thread's CPU belongs to, by the stage name it carries."""
    for piece in PIECES[:-1]:
        if thread.startswith(piece):
            return piece
    return "other"


def cpu_pieces(by_thread: Mapping[str, float], process_s: float, frames: float) -> dict[str, float]:
    """ms per frame for each piece; `other` is the process total less the named threads (the HTTP server, the main
    thread, library threads, and threads that ended), so the pieces add up to the process exactly."""
    pieces = dict.fromkeys(PIECES, 0.0)
    for thread, cpu in by_thread.items():
        if piece_of(thread) != "other":
            pieces[piece_of(thread)] += cpu
    pieces["other"] = process_s - sum(pieces.values())
    return {name: cpu * 1000 / max(1.0, frames) for name, cpu in pieces.items()}


def write_line_video(path: Path, frames: int = 240, fps: float = 30.0) -> Path:
    """An MJPG .avi of the synthetic line: every contender decodes the same frames."""
    import cv2

    from daemon.synthetic.line import LineParams, SyntheticLine

    line = SyntheticLine(LineParams(seed=9300, defect_rate=0.5))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 480))  # type: ignore[attr-defined]
    for index in range(frames):
        writer.write(line.render(index).image)
    writer.release()
    return path


def child_json(args: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run `python bench/<script> ...` in a fresh process; its last stdout line is its JSON answer."""
    import subprocess

    done = subprocess.run([PYTHON, *args], cwd=REPO, env=child_env(), capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def child_env() -> dict[str, str]:
    """A benchmark's child process: this environment without the developer's own LINEWATCH_* settings."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("LINEWATCH_")}, "YOLO_OFFLINE": "1"}


def median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def percentile(values: Sequence[float], q: int) -> float | None:
    if len(values) < 2:
        return round(values[0], 1) if values else None
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 1)


def checkout_name(repo: Path) -> str:
    """`linewatch <short commit>` (with `+changes` when the work tree differs from it) for a run's table."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30).stdout

    commit = git("rev-parse", "--short", "HEAD").strip() or "?"
    changed = [line for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
               if "bench/results/" not in line]  # a benchmark's own output is not a change to what it runs
    dirty = "+changes" if changed else ""
    return f"linewatch {commit}{dirty}"


def save(name: str, report: dict[str, Any], table: str) -> Path:
    """bench/results/<name>.json and .md (the table printed too); returns the stem for a PNG."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = Path(os.environ.get("LINEWATCH_BENCH_OUT", RESULTS)) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(table)
    print(table)
    return out


__all__ = ["free_port"]
