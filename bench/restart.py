"""The cost of exit 5: how long every camera is blind when a stuck native capture call restarts the process.

    .venv/bin/python bench/restart.py [--cameras 1,3] [--rounds 3]

linewatch contains a capture call stuck in native code by exiting 5 (docs/cameras.md, Failure isolation); the
supervisor starts it again. Every camera is blind from the exit until the new process inspects frames again.
This times, for N synthetic cameras, a real `linewatch run` from spawn to `/readyz` 200 (model loaded and
warmed up, every camera online with a fresh frame) and to the first frame inspected on every camera (from
/metrics). Add the supervisor's own delay (systemd `RestartSec=`, Docker's restart back-off) to these.
Saves bench/results/restart.json and .md; medians of `--rounds` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from machine import describe  # bench/machine.py: scripts here run as `python bench/<name>.py`

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def _inspected(metrics: str, cameras: list[str]) -> bool:
    seen = {line.split('camera="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines() if line.startswith("linewatch_frames_inspected_total{")}
    return all(seen.get(c, 0.0) >= 1 for c in cameras)


def one_restart(cameras: int) -> dict[str, float]:
    ids = [f"cam{i}" for i in range(1, cameras + 1)]
    port = _free_port()
    with tempfile.TemporaryDirectory() as state:
        env = {**os.environ, "YOLO_OFFLINE": "1", "LINEWATCH_MQTT__URL": "mqtt://127.0.0.1:9",
               "LINEWATCH_OUTBOX__DIR": state, "LINEWATCH_HTTP__HOST": "127.0.0.1",
               "LINEWATCH_HTTP__PORT": str(port), "LINEWATCH_LOG__FORMAT": "json", "LINEWATCH_LOG__LEVEL": "warning"}
        for index, cid in enumerate(ids):
            env[f"LINEWATCH_CAMERAS__{cid.upper()}__URL"] = f"synthetic://line?fps=15&seed={index}"
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "daemon", "run"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ready = inspected = None
        try:
            while time.monotonic() - started < 120 and (ready is None or inspected is None):
                if proc.poll() is not None:
                    raise RuntimeError(f"the daemon exited {proc.returncode}")
                if ready is None and _get(port, "/readyz")[0] == 200:
                    ready = time.monotonic() - started
                if inspected is None:
                    code, body = _get(port, "/metrics")
                    if code == 200 and _inspected(body, ids):
                        inspected = time.monotonic() - started
                time.sleep(0.02)
        finally:
            proc.terminate()
            proc.wait(30)
    if ready is None or inspected is None:
        raise RuntimeError("the daemon did not get ready within 120 s")
    return {"to_ready_s": round(ready, 2), "to_every_camera_inspected_s": round(inspected, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", default="1,3")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    counts = [int(n) for n in args.cameras.split(",")]
    runs: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
    for _ in range(args.rounds):
        for n in counts:
            runs[n].append(one_restart(n))
            print(n, runs[n][-1], flush=True)
    summary = {str(n): {key: statistics.median(r[key] for r in rs) for key in rs[0]} for n, rs in runs.items()}
    report: dict[str, Any] = {
        "benchmark": "restart", "machine": describe(), "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "rounds": args.rounds, "median": summary,
        "runs": {str(n): rs for n, rs in runs.items()}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "restart.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Restart cost ({report['machine']['cpu_model']}, {report['cores']} CPUs; medians of {args.rounds})", "",
             "| cameras | spawn → /readyz 200 (s) | spawn → every camera inspected (s) |", "|---:|---:|---:|"]
    lines += [f"| {n} | {s['to_ready_s']:.2f} | {s['to_every_camera_inspected_s']:.2f} |" for n, s in summary.items()]
    (RESULTS / "restart.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
