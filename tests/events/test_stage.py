"""The event stage on its own thread, against a real outbox on disk: a moving defect becomes one `new` event in
the outbox, and the stats read only the figures the stage itself publishes (never its tracker or its queues
from the publisher's thread)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np

from daemon.events.stage import EventStage, StageFigures
from daemon.frames import BBox, Detection, Frame, Inference, ModelInfo, utc_now
from daemon.handoff import DropPolicy, Handoff
from daemon.outbox import Outbox
from daemon.outbox.types import OutboxLimits

IMAGE = np.zeros((480, 640, 3), dtype=np.uint8)
MODEL = ModelInfo("linewatch-defects", "0" * 64, 320, "cpu", ("scratch", "dent", "stain", "missing_component"))


def _result(seq: int) -> Inference:
    x = 100 + 8.0 * seq  # a 15 px scratch moving 8 px a frame, as on the synthetic line
    frame = Frame("cam", seq, IMAGE, time.monotonic(), utc_now())
    return Inference(frame, (Detection("scratch", 0, 0.9, BBox(x, 200, x + 15, 230)),), 12.5)


def _until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.01)


def test_a_moving_defect_is_one_new_event_and_the_stats_read_the_stages_own_snapshot(tmp_path: Path) -> None:
    stop = threading.Event()
    results: Handoff[Inference] = Handoff("results:cam", 64, DropPolicy.WAIT, stop)
    with Outbox(tmp_path / "outbox.sqlite3", OutboxLimits(max_bytes=1_000_000, max_age_s=1e9)) as outbox:
        stage = EventStage("cam", MODEL, results, outbox, stop)
        assert stage.stats()["tracks_open"] == 0 and stage.figures == StageFigures()
        stage.start()
        for seq in range(10):
            assert results.put(_result(seq))
        _until(lambda: outbox.stats().pending_events >= 1)
        _until(lambda: stage.figures.tracks_open == 1)
        events = [json.loads(e.payload) for e in outbox.pending(10)]
        assert [(e["type"], e["label"], e["frames_seen"]) for e in events] == [("new", "scratch", 3)]
        stats = stage.stats()
        assert stats["tracks_open"] == 1 and stats["inference_ms"]["p50"] == 12.5
        assert stats["frame_age_ms"]["p50"] is not None and stats["events"]["new"] == 1

        class NoReadsFromHere:
            def __getattr__(self, name: str) -> object:
                raise AssertionError(f"stats() read the tracker's {name} from another thread")

        tracker, stage._tracker = stage._tracker, NoReadsFromHere()  # type: ignore[assignment]
        try:  # the publisher's thread must not touch the tracker or the stage's queues
            stage._inference_ms.clear()
            assert stage.stats()["tracks_open"] == 1 and stage.stats()["inference_ms"]["p50"] == 12.5
        finally:
            stage._tracker = tracker
        results.close()
        assert stage.join(10) and stage.failure is None
