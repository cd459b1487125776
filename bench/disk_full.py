"""A full disk with the broker down: how many events does the outbox keep, and is anything lost outright?

The scenario of issue 17, section 5: the outbox on a 48 MB filesystem that another process fills to the last
byte while the broker is down; the daemon in frames mode at 15 fps for 75 s. Then the disk is freed and the
broker comes back: every seq must either reach the consumer or lie in a logged drop range, and the newest
events must be delivered. Reports the events kept against the space there was, the drop log lines, and what
reached the consumer. `--repo` runs another checkout's daemon (an older linewatch) side by side in the same run.

    python bench/disk_full.py                              # this checkout
    python bench/disk_full.py --repo /tmp/linewatch-before # and another, same scenario, one after the other
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from harness import REPO, checkout_name, daemon_env, free_port, metric, save
from machine import describe

from tests.support.mosquitto import Mosquitto
from tests.support.procs import DaemonProcess
from tests.support.subscriber import Subscriber

CAMERA = "synthetic://line?fps=15&defect_rate=0.8&seed=9500"


def fill_to_the_last_byte(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (1 << 20, 65536, 4096, 1):
            with suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)


def one_run(repo: Path, scratch: Path, seconds: float, size_mb: int) -> dict[str, Any]:
    disk = scratch / "disk"
    disk.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(disk)], check=True)
    broker = Mosquitto(workdir=scratch / "broker", persistence=True).start()
    consumer = Subscriber(broker.host, broker.port, ["linewatch/+/defects"], client_id="mes", persistent=True).start()
    consumer.close()
    broker.stop()  # the consumer's session is saved; the broker is down from now on
    port = free_port()
    env = daemon_env(CAMERA, broker.url, disk / "outbox", port, LINEWATCH_EVENTS__MODE="frames",
                     LINEWATCH_LOG__LEVEL="info", LINEWATCH_MQTT__RECONNECT_MAX_S="2")
    daemon = DaemonProcess(env, cwd=repo).start()
    try:
        daemon.wait_for_event("daemon_ready", 180)
        daemon.wait_for_log(lambda r: r.get("event") == "defect_event" and r["seq"] >= 20, 60)
        fill_to_the_last_byte(disk / "someone-elses.log")
        filled_at = time.monotonic()
        stats = os.statvfs(disk)
        free_after_fill = stats.f_bavail * stats.f_frsize
        time.sleep(max(0.0, seconds - 8))  # the outage: the run's own length, measured, not a synchronisation
        committed = int(metric(port, "linewatch_events_committed_total"))
        kept = int(metric(port, "linewatch_outbox_events"))
        kept_bytes = int(metric(port, "linewatch_outbox_bytes"))
        reserve = 8 * 1024 * 1024
        # The disk and the broker come back
        (disk / "someone-elses.log").unlink()
        broker.start()
        consumer = Subscriber(broker.host, broker.port, ["linewatch/+/defects"], client_id="mes",
                              persistent=True).start()
        deadline = time.monotonic() + 120
        while metric(port, "linewatch_outbox_events") > 0 and time.monotonic() < deadline:
            time.sleep(0.5)  # a benchmark polls what it measures
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        summary = daemon.wait_for_event("shutdown_complete", 5)
        time.sleep(2)  # the consumer hears the last acknowledged ones a moment after the acknowledgement
        delivered = {m.json()["seq"] for m in consumer.messages("/defects")}
        consumer.close()
    finally:
        daemon.close()
        broker.close()
        subprocess.run(["umount", "-l", str(disk)], check=False)
    drop_lines = [r for r in daemon.logs if r.get("event") == "outbox_dropped"]
    dropped = {seq for r in drop_lines for span in r.get("cameras", {}).values() for seq in range(span[0], span[1] + 1)}
    last = int(summary["events"])
    everything = set(range(1, last + 1))
    return {
        "repo": str(repo), "outage_s": round(time.monotonic() - filled_at, 1), "size_mb": size_mb,
        "free_bytes_after_fill": free_after_fill, "reserve_bytes": reserve,
        "events_committed_during_run": committed, "events_total": last,
        "kept_at_end_of_outage": kept, "kept_payload_bytes": kept_bytes,
        "drop_log_lines": len(drop_lines), "dropped_logged": len(dropped & everything),
        "delivered": len(delivered & everything),
        "lost_outright": len(everything - delivered - dropped),
        "newest_delivered": last in delivered,
        "outbox_dropped_total": summary.get("outbox_dropped_total"),
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# A full disk with the broker down: {report['size_mb']} MB filesystem filled to the last byte, "
             f"frames mode at 15 fps for {report['seconds']:g} s", "",
             f"Machine: {report['machine'].get('cpu_model', '?')}, {report['machine'].get('cpus', '?')} CPUs. "
             "The outbox's reserve (8 MB) is all the space there is once the disk is full.", "",
             "| linewatch | events in the outage | kept when it ended | kept payload | drop log lines | dropped "
             "(logged) | events in all | delivered after | lost outright | newest delivered |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, run in report["runs"].items():
        lines.append(f"| {name} | {run['events_committed_during_run']} | {run['kept_at_end_of_outage']} | "
                     f"{run['kept_payload_bytes'] / 1e6:.2f} MB | {run['drop_log_lines']} | {run['dropped_logged']} | "
                     f"{run['events_total']} | {run['delivered']} | {run['lost_outright']} | "
                     f"{'yes' if run['newest_delivered'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=75.0)
    parser.add_argument("--size-mb", type=int, default=48)
    parser.add_argument("--repo", type=Path, action="append", default=[], help="another checkout to run as well")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/disk_full.py mounts a tmpfs: run it as root", file=sys.stderr)
        return 2
    runs = {}
    for repo in [REPO, *args.repo]:
        name = checkout_name(repo)
        with TemporaryDirectory(prefix="linewatch-disk-full-") as scratch:
            runs[name] = one_run(repo.resolve(), Path(scratch), args.seconds, args.size_mb)
    report = {"bench": "disk_full", "machine": describe(), "seconds": args.seconds, "size_mb": args.size_mb,
              "runs": runs}
    save("disk_full", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
