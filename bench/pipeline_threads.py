"""torch's CPU threads inside the whole daemon, not the model alone: all CPUs against all but one.

    .venv/bin/python bench/pipeline_threads.py [--threads 1,2] [--rounds 3] [--cameras 1,4]

bench/inference_threads.py times the model alone, where more threads win. Inside the daemon the capture,
decode, event and publisher threads need CPU too. This runs bench/cameras.py (file sources at full speed,
batching on and off) once per thread count per round, the counts interleaved, and quotes medians. Saves
bench/results/pipeline_threads.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import describe  # bench/machine.py: scripts here run as `python bench/<name>.py`

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cameras", default="1,4")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    counts = [int(n) for n in args.threads.split(",")]
    fps: dict[int, dict[str, list[float]]] = {n: {} for n in counts}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            for threads in counts:
                out = Path(scratch) / f"t{threads}-{round_index}"
                subprocess.run([sys.executable, str(ROOT / "bench" / "cameras.py"), "--kinds", "file", "--cameras",
                                args.cameras, "--rounds", "1", "--seconds", str(args.seconds), "--threads",
                                str(threads), "--out", str(out)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
                summary = json.loads(out.with_suffix(".json").read_text())["summary"]
                for key, row in summary.items():
                    if key != "ratios":
                        fps[threads].setdefault(key, []).append(row["aggregate_fps"])
                print(threads, round_index, {k: v[-1] for k, v in fps[threads].items()}, flush=True)
    medians = {n: {k: round(statistics.median(v), 1) for k, v in rows.items()} for n, rows in fps.items()}
    report = {"benchmark": "pipeline_threads", "machine": describe(), "cpus": os.cpu_count(), "rounds": args.rounds,
              "median_fps": medians, "runs": fps}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pipeline_threads.json").write_text(json.dumps(report, indent=2) + "\n")
    keys = list(medians[counts[0]])
    cpu = report["machine"]["cpu_model"]
    lines = [f"# torch threads inside the daemon ({cpu}, {os.cpu_count()} CPUs; medians of {args.rounds} "
             "interleaved rounds)",
             "", "| source/cameras/batching | " + " | ".join(f"{n} thread(s), fps" for n in counts) + " | ratio |",
             "|---|" + "---:|" * (len(counts) + 1)]
    for key in keys:
        values = [medians[n][key] for n in counts]
        lines.append(f"| {key} | " + " | ".join(f"{v:.1f}" for v in values) + f" | {values[0] / values[-1]:.2f} |")
    (RESULTS / "pipeline_threads.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
