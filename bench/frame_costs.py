"""What each piece of a frame's path costs, timed alone, and on which of the daemon's threads it runs.

The running daemon's own account is by thread, from /proc (bench/cpu_account.py, and bench/overhead.py's long
run): each piece below runs on the thread named beside it, so the two reconcile thread by thread; the
difference on a thread is what timing a piece alone, warm and back to back, does not see (cold caches between
frames at a camera's pace, wake-ups, the GIL).

Used by bench/overhead.py (and runnable alone: `.venv/bin/python bench/frame_costs.py`). Each piece is timed
in this process on the same 640x480 frames of the synthetic line, median of many runs, with the daemon's own
code and Ultralytics' own functions:

    decode (JPEG, a stand-in for the camera's)   capture thread
    letterbox + RGB/CHW + float (prepare)         capture thread (it was the detector's before issue 11)
    tensor from the prepared frames               detector thread
    the model's forward pass                      detector thread
    NMS (Ultralytics non_max_suppression)         detector thread
    box scaling + detection tuples                detector thread
    Ultralytics Results objects                   not built any more (predict() builds them)
    outbox commit (SQLite, fsync per event)       event thread (the publisher is woken by it)

and the GIL: the detector's forward pass alone, against the same with a capture thread decoding meanwhile.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_RUNS = 60


def _median_ms(call: Callable[[], Any], runs: int = _RUNS) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 3)


def measure(backend: str = "auto") -> dict[str, Any]:
    import cv2
    import numpy as np
    import torch
    from ultralytics.engine.results import Results

    from daemon.detect.model import Detector
    from daemon.outbox import Outbox, OutboxLimits
    from daemon.settings import ModelSettings
    from daemon.synthetic.line import LineParams, SyntheticLine

    detector = Detector(ModelSettings(backend=backend))  # type: ignore[call-arg]
    detector.warm_up(640, 480, 3)
    line = SyntheticLine(LineParams(seed=9500, defect_rate=0.6))
    image = line.render(3).image
    jpeg = cv2.imencode(".jpg", image)[1]
    prepared = detector.prepare(image)
    assert prepared is not None
    model = detector.loaded
    batch = torch.from_numpy(prepared.tensor[None])
    with torch.inference_mode():
        raw = model(batch)
        kept = detector._nms(raw, 0.25, 0.45, max_det=300)[0]

    def scale() -> None:
        xyxy = detector._scale_boxes(batch.shape[2:], kept[:, :4].clone(), image.shape[:2])
        detector._tuples(xyxy.tolist(), kept[:, 4].tolist(), kept[:, 5].int().tolist())

    def forward() -> None:
        with torch.inference_mode():
            model(batch)

    def nms() -> None:
        with torch.inference_mode():
            detector._nms(raw, 0.25, 0.45, max_det=300)

    with tempfile.TemporaryDirectory() as state:
        outbox = Outbox(Path(state) / "outbox.sqlite3", OutboxLimits(max_bytes=64 << 20, max_age_s=3600.0))
        payload = json.dumps({"detections": [{"bbox": [1.0, 2.0, 3.0, 4.0]}] * 3}).encode() * 3
        counter = iter(range(10**9))
        commit = _median_ms(lambda: outbox.append("cam", f"e{next(counter)}", lambda seq: payload))
        outbox.close()

    pieces = {
        "decode (JPEG stand-in)": ("capture", _median_ms(lambda: cv2.imdecode(jpeg, cv2.IMREAD_COLOR))),
        "letterbox + RGB/CHW + float (prepare)": ("capture", _median_ms(lambda: detector.prepare(image))),
        "tensor from prepared frames": ("detect", _median_ms(lambda: torch.from_numpy(prepared.tensor[None]))),
        "model forward": ("detect", _median_ms(forward)),
        "NMS": ("detect", _median_ms(nms)),
        "box scaling + detections": ("detect", _median_ms(scale)),
        "Ultralytics Results objects": ("not built", _median_ms(
            lambda: Results(image, path="", names=model.names, boxes=kept[:, :6]))),
        "outbox commit (fsync)": ("events", commit),
    }
    stop = threading.Event()

    def decoder() -> None:
        while not stop.is_set():
            cv2.imdecode(jpeg, cv2.IMREAD_COLOR)

    alone = _median_ms(forward)
    thread = threading.Thread(target=decoder, daemon=True)
    thread.start()
    beside_capture = _median_ms(forward)
    stop.set()
    thread.join()
    del np
    return {"backend": detector.backend_name,
            "pieces_ms": {name: {"thread": where, "ms": ms} for name, (where, ms) in pieces.items()},
            "forward_alone_ms": alone, "forward_beside_a_decoding_thread_ms": beside_capture}


def markdown(costs: dict[str, Any]) -> str:
    lines = [f"Per-frame pieces (backend {costs['backend']}), median ms: each piece timed alone in a process of its "
             "own, warm, back to back. They say what a piece costs, not what the running daemon spends: that is the "
             "account by thread above (and bench/cpu_account.py at a live camera's pace), where caches are cold "
             "between frames and every thread's wake-ups count.", "",
             "| piece | ms | on the daemon's |", "|---|---:|---|"]
    lines += [f"| {name} | {row['ms']} | {row['thread']} |" for name, row in costs["pieces_ms"].items()]
    lines += ["", f"The capture thread against the model (the GIL, and the cores): the forward pass alone "
              f"{costs['forward_alone_ms']} ms, "
              f"beside a thread decoding frames {costs['forward_beside_a_decoding_thread_ms']} ms."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(measure()))
