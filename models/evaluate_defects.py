"""Scoring `linewatch.defect/3` events against the synthetic line's ground truth: one event per physical defect.

A physical defect is (part_id, class_id, row): it rides the belt with its part, so its row in the frame never
changes. Each defect the daemon reported is attributed by re-rendering the truth of its best view's frame: the
defect whose box it overlaps with IoU >= EVENT_IOU. The best view is taken from the defect's `end` (its whole
life; joined on `defect_id`) when there is one: a `new` may come while the defect is still entering the frame,
where the ground truth does not list it yet (it needs half of a defect visible).
Figures: events per physical defect (matched `new` events over the defects that
got one), defective-part recall (a defective part that passed through gets at least one `new`), false events per
1,000 good parts, and the delay from a defect's first appearance to its `new` event.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

from daemon.synthetic.line import CLASS_NAMES, LineParams, SyntheticLine, TruthBox
from models.evaluate import _inspected_parts, attribute

DefectKey = tuple[int, int, int]  # part_id, class_id, row


def _key(truth: TruthBox) -> DefectKey:
    return truth.part_id, truth.class_id, round(truth.y1)


def score_defects(events: list[dict[str, Any]], params: LineParams, *, frames: int) -> dict[str, Any]:
    line = SyntheticLine(params)
    inspected = _inspected_parts(line, frames)
    first_seen: dict[DefectKey, int] = {}
    for index in range(frames):
        for truth in line.truth(index)[1]:
            first_seen.setdefault(_key(truth), index)
    new = [e for e in events if e["type"] == "new" and e["frame_seq"] < frames]
    ends = {e["defect_id"]: e for e in events if e["type"] == "end"}
    per_defect: collections.Counter[DefectKey] = collections.Counter()
    delays: list[int] = []
    delays_ms: list[float] = []
    false_on_good: list[int] = []
    stray = background = 0
    for event in new:
        view = ends.get(event["defect_id"], event)  # the best view of the defect's whole life
        parts, defects = line.truth(min(int(view["frame_seq"]), frames - 1))
        b = view["bbox"]
        box = (b["x1"], b["y1"], b["x2"], b["y2"])
        hit, under = attribute(box, parts, defects)
        if hit is not None:
            key = _key(hit)
            per_defect[key] += 1
            if per_defect[key] == 1:
                frames_late = int(event["last_frame_seq"]) - first_seen[key]
                delays.append(frames_late)
                delays_ms.append(frames_late * 1000.0 / params.fps + float(event["latency_ms"]["inference"]))
        elif under is None:
            background += 1
        elif under.defective:
            stray += 1
        else:
            false_on_good.append(under.part_id)
    defective = {pid for pid, bad in inspected.items() if bad}
    good = {pid for pid, bad in inspected.items() if not bad}
    found_parts = {key[0] for key in per_defect}
    visible = {key for key in first_seen if key[0] in defective}

    def pct(values: list[float] | list[int], q: float) -> float | None:
        return round(float(np.percentile(values, q)), 1) if values else None

    return {
        "frames": frames,
        "new_events": len(new),
        "end_events": sum(1 for e in events if e["type"] == "end"),
        "physical_defects_seen": len(visible),
        "physical_defects_with_event": len(per_defect),
        "events_per_physical_defect": round(sum(per_defect.values()) / max(1, len(per_defect)), 4),
        "physical_defects_with_more_than_one_event": sum(1 for n in per_defect.values() if n > 1),
        "defect_recall": round(len(set(per_defect) & visible) / max(1, len(visible)), 4),
        "defect_recall_by_class": {
            CLASS_NAMES[c]: f"{len({k for k in per_defect if k[1] == c} & visible)} of "
            f"{len({k for k in visible if k[1] == c})}" for c in sorted({k[1] for k in visible})},
        "defective_parts": len(defective),
        "defective_part_recall": round(len(defective & found_parts) / max(1, len(defective)), 4),
        "good_parts": len(good),
        "false_events": sum(1 for pid in false_on_good if pid in good),
        "false_events_per_1000_good_parts": round(1000 * sum(1 for p in false_on_good if p in good)
                                                  / max(1, len(good)), 2),
        "stray_events_on_defective_parts": stray,
        "background_events": background,
        "delay_frames": {"p50": pct(delays, 50), "p99": pct(delays, 99)},
        "delay_ms": {"p50": pct(delays_ms, 50), "p99": pct(delays_ms, 99),
                     "note": f"the frames at the line's {params.fps:g} fps plus the inference time of the "
                     "confirming frame (a run with realtime=false queues frames, so its capture-to-commit age is not "
                     "a live figure)"},
        "missed_defective_parts": sorted(defective - found_parts)[:50],
    }
