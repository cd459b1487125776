"""Why linewatch sets torch's thread count itself: inference speed at 1 thread (what importing Ultralytics
leaves on a 2-core box, OMP_NUM_THREADS = cores - 1) against all cores, measured side by side in one run.

    .venv/bin/python bench/inference_threads.py [--rounds 7] [--frames 40]

Rounds alternate the thread counts so machine noise hits both alike; medians are quoted. Figures are saved
to bench/results/inference_threads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from machine import describe  # bench/machine.py: scripts here run as `python bench/<name>.py`

os.environ.setdefault("YOLO_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parent / "results" / "inference_threads.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--frames", type=int, default=40, help="frames per measurement")
    args = parser.parse_args()

    import torch

    from daemon.detect.model import Detector
    from daemon.settings import ModelSettings
    from daemon.synthetic.line import LineParams, SyntheticLine

    detector = Detector(ModelSettings.model_validate({}))
    omp_after_import = os.environ.get("OMP_NUM_THREADS")
    line = SyntheticLine(LineParams(seed=9100, defect_rate=0.5))
    images = [line.render(i).image for i in range(args.frames)]
    cores = os.cpu_count() or 1
    counts = sorted({1, cores})
    fps: dict[int, list[float]] = {n: [] for n in counts}
    detector.warm_up(640, 480, 3)
    for _ in range(args.rounds):
        for threads in counts:
            torch.set_num_threads(threads)
            started = time.perf_counter()
            for image in images:
                detector.infer(image)
            fps[threads].append(len(images) / (time.perf_counter() - started))
    medians = {n: statistics.median(v) for n, v in fps.items()}
    report = {
        "benchmark": "inference_threads",
        "machine": describe(),
        "model": detector.info.name,
        "imgsz": detector.imgsz,
        "device": detector.device,
        "cpu": platform.processor() or platform.machine(),
        "cores": cores,
        "torch": torch.__version__,
        "omp_num_threads_after_ultralytics_import": omp_after_import,
        "rounds": args.rounds,
        "frames_per_round": args.frames,
        "fps_by_threads": {str(n): [round(v, 2) for v in fps[n]] for n in counts},
        "median_fps_by_threads": {str(n): round(medians[n], 2) for n in counts},
        "ratio_all_cores_vs_1": round(medians[cores] / medians[1], 3),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    for n in counts:
        print(f"threads={n}: median {medians[n]:.1f} fps over {args.rounds} rounds of {args.frames} frames")
    print(f"all cores / 1 thread = {report['ratio_all_cores_vs_1']:.2f}x  (saved {RESULTS})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
