"""/healthz under hostile clients, and the time from SIGTERM to exit with them still on the port.

Slow-loris clients (one byte every 2 s), idle connections (a port scanner) and clients that ask for /metrics
and never read the answer, 56 in all; /healthz is probed 30 times, with the clients and (side by side in the
same run) without them. `--repo` runs another checkout's daemon as well (an older linewatch, for a before and
after on one machine).

    python bench/hostile_clients.py [--repo /tmp/linewatch-before]
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import urllib.request
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from harness import REPO, broker, checkout_name, daemon_env, free_port, percentile, save, wait_ready
from machine import describe

from tests.support.hostile import SlowClients
from tests.support.procs import DaemonProcess

PROBES = 30
PROBE_TIMEOUT_S = 5.0


def probe_ms(port: int) -> float | None:
    """One /healthz, in ms; None when it did not answer within PROBE_TIMEOUT_S."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=PROBE_TIMEOUT_S) as answer:
            answer.read()
    except OSError:
        return None
    return (time.monotonic() - started) * 1000


def latencies(port: int) -> dict[str, Any]:
    taken = [probe_ms(port) for _ in range(PROBES)]
    answered = [ms for ms in taken if ms is not None]
    return {"probes": PROBES, "answered": len(answered), "within_1_s": sum(ms <= 1000 for ms in answered),
            "p50_ms": percentile(answered, 50), "p99_ms": percentile(answered, 99),
            "max_ms": round(max(answered), 1) if answered else None}


def one_run(repo: Path, broker_url: str, scratch: Path) -> dict[str, Any]:
    port = free_port()
    env = daemon_env("synthetic://line?fps=10", broker_url, scratch / "state", port)
    daemon = DaemonProcess(env, cwd=repo).start()
    try:
        wait_ready(port, daemon, timeout=180)
        quiet = latencies(port)
        with SlowClients("127.0.0.1", port, slow=8, idle=40, deaf=8, interval_s=2.0):
            time.sleep(5)  # let them settle on the port: several of the server's deadlines go by
            hostile = latencies(port)
            started = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            try:
                code: int | None = daemon.wait(60)
            except AssertionError:  # still running a minute after SIGTERM
                code = None
            stop_s = time.monotonic() - started
    finally:
        daemon.close()
    return {"repo": str(repo), "quiet": quiet, "hostile": hostile, "stop_s": round(stop_s, 2), "exit_code": code}


def markdown(report: dict[str, Any]) -> str:
    lines = ["# /healthz with 56 hostile clients on the port (8 slow-loris, 40 idle, 8 that never read)", "",
             f"Machine: {report['machine'].get('cpu_model', '?')}, {report['machine'].get('cpus', '?')} CPUs. "
             f"{PROBES} probes each, side by side: without the clients, then with them; then SIGTERM with them "
             "still connected.", "",
             "| linewatch | clients | answered | within 1 s | p50 (ms) | p99 (ms) | max (ms) | SIGTERM to exit "
             "| exit |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, run in report["runs"].items():
        for kind in ("quiet", "hostile"):
            row = run[kind]
            stop = f"{run['stop_s']} s" if kind == "hostile" else ""
            code = run["exit_code"] if kind == "hostile" else ""
            lines.append(f"| {name} | {'none' if kind == 'quiet' else '56'} | {row['answered']}/{row['probes']} | "
                         f"{row['within_1_s']} | {row['p50_ms']} | {row['p99_ms']} | {row['max_ms']} | {stop} "
                         f"| {code} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, action="append", default=[], help="another checkout to run as well")
    args = parser.parse_args()
    runs = {}
    with broker() as mosquitto:
        for repo in [REPO, *args.repo]:
            with TemporaryDirectory(prefix="linewatch-hostile-") as scratch:
                runs[checkout_name(repo)] = one_run(repo.resolve(), mosquitto.url,
                                                                                Path(scratch))
    report = {"bench": "hostile_clients", "machine": describe(), "runs": runs}
    save("hostile_clients", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
