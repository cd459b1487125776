"""Per-part verdict accuracy on the synthetic line, with triggers from its own ground truth (the photo-eye).

    .venv/bin/python bench/verdict_accuracy.py [--parts 2000] [--defect-rate 0.5] [--frames 3]

The daemon's own judging path, without the network: its Detector (the shipped model, the daemon's settings), its
Rules (LINEWATCH_RULES__* defaults: the confidence each sighting needs) and its Job (jobs.py) over the frames of each
part's window (the photo-eye's frame and the next ones, each rendered by the line and inspected), compared with the
line's ground truth for that part (defective or not). Only the frames of the windows are rendered and inspected,
so thousands of parts take minutes; tests/integration/test_verdicts.py runs the same on the daemon as a process,
end to end, on a smaller sample.

Reported: NG recall (defective parts judged ng), false NG per 1,000 good parts, accuracy, and every part judged
wrong (its id, so it can be rendered and looked at). Targets: recall >= 0.99, false NG <= 1 per 1,000 good parts.
Saves bench/results/verdict_accuracy.*.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from harness import save
from machine import describe

os.environ.setdefault("YOLO_OFFLINE", "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", type=int, default=2000)
    parser.add_argument("--defect-rate", type=float, default=0.5)
    parser.add_argument("--frames", type=int, default=3, help="frames a job covers (LINEWATCH_JOBS__FRAMES)")
    parser.add_argument("--confirm-hits", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--min-confidence", type=float, default=0.4, help="LINEWATCH_JOBS__MIN_CONFIDENCE")
    args = parser.parse_args()

    from daemon.detect.model import Detector
    from daemon.events.jobs import Job, JobRules, Look, Trigger
    from daemon.events.rules import Rules
    from daemon.frames import utc_now
    from daemon.settings.events import RulesSettings
    from daemon.settings.sections import ModelSettings
    from daemon.synthetic.line import LineParams, SyntheticLine

    model_settings = ModelSettings()  # type: ignore[call-arg]
    detector = Detector(model_settings)
    detector.warm_up(640, 480, 2)
    rules = Rules(RulesSettings(), detector.info.classes, model_settings.confidence)  # type: ignore[call-arg]
    job_rules = JobRules(frames=args.frames, confirm_hits=args.confirm_hits, min_confidence=args.min_confidence,
                         timeout_ms=60_000,
                         max_frame_age_ms=60_000, roi=(0.25, 0.0, 0.75, 0.5))
    line = SyntheticLine(LineParams(seed=args.seed, defect_rate=args.defect_rate))
    judged: list[dict[str, Any]] = []
    index, started = 1, time.monotonic()
    while len(judged) < args.parts:
        part = line.photo_eye(index)
        if part is None:
            index += 1
            continue
        defective = next(p.defective for p in line.truth(index)[0] if p.part_id == part)
        job = Job(Trigger("line", f"job-{part}", str(part), "photo_eye", 0.0, utc_now(), index), job_rules)
        result = None
        for seq in range(index, index + args.frames):
            image = line.render(seq).image
            detections, _ = detector.infer(image)
            kept = tuple(d for d in detections if rules.refuse(d, 640, 480) is None)  # as the event stage hands on
            look = Look(seq, 0.0, utc_now(), 0.0, 640, 480, kept)
            job.observe(look, None)
            result = job.decide(0.0, utc_now())
            if result is not None:
                break
        assert result is not None, "a window of inspected frames always ends in a verdict"
        judged.append({"part_id": part, "frame": index, "defective": defective, "result": result.verdict.value,
                       "found": [f.label for f in result.findings]})
        index += 1
        if len(judged) % 200 == 0:
            print(f"{len(judged)} parts, {time.monotonic() - started:.0f} s", file=sys.stderr)
    bad = [j for j in judged if j["defective"]]
    good = [j for j in judged if not j["defective"]]
    recall = sum(j["result"] == "ng" for j in bad) / max(1, len(bad))
    false_ng = sum(j["result"] == "ng" for j in good)
    unknown = sum(j["result"] == "unknown" for j in judged)
    wrong = [j for j in judged if (j["result"] == "ng") != j["defective"]]
    report = {"machine": describe(), "parts": len(judged), "defective": len(bad), "good": len(good),
              "defect_rate": args.defect_rate, "frames_per_job": args.frames, "confirm_hits": args.confirm_hits,
              "min_confidence": args.min_confidence,
              "seed": args.seed, "ng_recall": recall, "false_ng": false_ng,
              "false_ng_per_1000_good": 1000 * false_ng / max(1, len(good)),
              "accuracy": 1 - len(wrong) / max(1, len(judged)), "unknown": unknown, "wrong": wrong,
              "seconds": time.monotonic() - started}
    table = ("# Per-part verdict accuracy (synthetic line, photo-eye triggers)\n\n"
             f"{len(judged)} parts (seed {args.seed}, defect rate {args.defect_rate}), {args.frames} frames per job, "
             f"a class confirmed in {args.confirm_hits} of them from confidence {args.min_confidence}, the daemon's "
             "Detector, Rules and Job; machine: "
             f"{report['machine']['cpu_model']}.\n\n"
             "| parts | defective | good | NG recall | false NG | false NG / 1,000 good | accuracy | unknown |\n"
             "|---|---|---|---|---|---|---|---|\n"
             f"| {len(judged)} | {len(bad)} | {len(good)} | {recall:.4f} | {false_ng} | "
             f"{report['false_ng_per_1000_good']:.2f} | {report['accuracy']:.4f} | {unknown} |\n")
    if wrong:
        table += "\nJudged wrong (part id @ photo-eye frame: truth -> verdict, found):\n\n" + "".join(
            f"- {j['part_id']} @ {j['frame']}: {'defective' if j['defective'] else 'good'} -> {j['result']} "
            f"{j['found']}\n" for j in wrong[:50])
    save("verdict_accuracy", report, table)
    return 0 if recall >= 0.99 and report["false_ng_per_1000_good"] <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
