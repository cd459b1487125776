"""Why linewatch unpins OpenVINO: two copies of the model on one thread each, pinned (OpenVINO's default on a
CPU) and unpinned, side by side in one run, against one copy on every core.

    .venv/bin/python bench/openvino_pinning.py [--rounds 3] [--seconds 5]

The shipped OpenVINO export on pre-letterboxed tensors (320x256, what 640x480 frames become at imgsz 320), no
pipeline. Each configuration is compiled on one Core, as Ultralytics does, and run from as many Python threads
as it has copies, each with its own infer request. Rounds interleave the configurations; medians are quoted.
Saves bench/results/openvino_pinning.json, .md and .png.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

from harness import median, save
from machine import describe

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = {  # name: (copies, compile options)
    "one copy, every core (Ultralytics' LATENCY default)": (1, {"PERFORMANCE_HINT": "LATENCY"}),
    "two copies, 1 thread each, pinned": (2, {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 1}),
    "two copies, 1 thread each, unpinned (linewatch)": (
        2, {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 1, "ENABLE_CPU_PINNING": False}),
}


def run(requests: list[Any], tensor: Any, seconds: float) -> float:
    counts = [0] * len(requests)
    until = time.perf_counter() + seconds

    def loop(index: int) -> None:
        while time.perf_counter() < until:
            requests[index].infer({0: tensor})
            counts[index] += 1

    threads = [threading.Thread(target=loop, args=(index,)) for index in range(len(requests))]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def main() -> int:
    import numpy as np
    import openvino

    from daemon.settings import DEFAULT_MODEL

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    folder = DEFAULT_MODEL.parent / f"{DEFAULT_MODEL.stem}_openvino_model"
    xml = next(folder.glob("*.xml"))
    core = openvino.Core()
    tensor = np.random.default_rng(0).random((1, 3, 256, 320), dtype=np.float32)
    compiled = {name: [core.compile_model(core.read_model(str(xml)), "CPU", options) for _ in range(copies)]
                for name, (copies, options) in CONFIGS.items()}
    requests = {name: [model.create_infer_request() for model in models] for name, models in compiled.items()}
    for name in CONFIGS:
        run(requests[name], tensor, 0.5)  # warm
    rows = [{"round": index, "config": name, "fps": run(requests[name], tensor, args.seconds)}
            for index in range(args.rounds) for name in CONFIGS]
    summary = {name: median([r["fps"] for r in rows if r["config"] == name]) for name in CONFIGS}
    base = summary[next(iter(CONFIGS))] or 1.0
    lines = [f"# OpenVINO pinning on {describe().get('cpu_model')}, {describe().get('cpus')} CPUs", "",
             f"The shipped model's OpenVINO export, 320x256 tensors, medians of {args.rounds} interleaved rounds of "
             f"{args.seconds:g} s; OpenVINO {openvino.__version__}.", "",
             "| configuration | fps | × one copy |", "|---|---:|---:|"]
    lines += [f"| {name} | {fps:.1f} | {(fps or 0) / base:.2f} |" for name, fps in summary.items()]
    out = save("openvino_pinning", {"benchmark": "openvino_pinning", "machine": describe(),
                                    "openvino": openvino.__version__, "summary": summary, "rows": rows},
               "\n".join(lines) + "\n")
    plot(summary, out.with_suffix(".png"))
    return 0


def plot(summary: dict[str, float | None], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 2.8))
    names = list(summary)
    ax.barh(range(len(names)), [summary[name] or 0 for name in names])
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("frames per second (raw model, all copies together)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
