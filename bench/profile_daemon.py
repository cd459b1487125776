"""A flame graph of the whole daemon under load, every thread, with py-spy (on PyPI; in the test extra).

    .venv/bin/python bench/profile_daemon.py [--name after] [--cameras 1] [--backend openvino] [--seconds 15]
        [--native]

The daemon runs as in bench/box_limit.py (N cameras on the same 640x480 MJPG video at full speed, a real
mosquitto, its default mode); after a warm-up, `py-spy record --threads` samples it. Saves
bench/results/profile_daemon_<backend>_<name>.svg (the flame graph) and prints, per thread, where its samples
land (leaf functions, top 12) and what share of the samples each thread took (a second recording of the same
run, right after the first). --native adds C/C++ frames; it
has to pause the process for each sample (py-spy's blocking mode), which slows it, so the default samples
without pausing (--nonblocking) and shows the Python frames only.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import RESULTS, broker, free_port, full_speed_env, running_daemon, wait_ready, write_line_video

WARM_S = 5.0


def record(pid: int, seconds: float, svg: Path, raw: Path, native: bool) -> None:
    """Two recordings of the same steady run, one after the other: the flame graph (py-spy's own SVG) and the
    collapsed stacks that the summary counts."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    common = [py_spy, "record", "--pid", str(pid), "--threads", "--duration", str(int(seconds)), "--rate", "100"]
    common += ["--native"] if native else ["--nonblocking"]
    for form, path in (("flamegraph", svg), ("raw", raw)):
        subprocess.run([*common, "--format", form, "-o", str(path)], check=True, capture_output=True)


def summarise(raw: Path, top: int = 12) -> str:
    threads: collections.Counter[str] = collections.Counter()
    leaves: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1].strip('"')
        threads[thread] += int(count)
        leaves[thread][frames[-1]] += int(count)
    total = sum(threads.values()) or 1
    lines = []
    for thread, samples in threads.most_common():
        lines.append(f"{thread}: {samples * 100 / total:.1f} % of the samples")
        for leaf, count in leaves[thread].most_common(top):
            lines.append(f"    {count * 100 / total:5.1f} %  {leaf}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="after")
    parser.add_argument("--cameras", type=int, default=1)
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--native", action="store_true")
    args = parser.parse_args()
    svg = RESULTS / f"profile_daemon_{args.backend}_{args.name}.svg"
    with tempfile.TemporaryDirectory() as scratch, broker() as mosquitto:
        video = write_line_video(Path(scratch) / "line.avi", frames=600)
        port = free_port()
        env = full_speed_env(video, mosquitto.url, Path(scratch) / "state", port, args.backend, args.cameras)
        raw = Path(scratch) / "stacks.txt"
        with running_daemon(env) as process:
            wait_ready(port, process)
            time.sleep(WARM_S)
            record(process.pid, args.seconds, svg, raw, args.native)
        print(summarise(raw))
    print(f"saved {svg}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
