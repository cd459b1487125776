"""The job stage on its own thread with a real outbox: each trigger gets exactly one verdict, committed with a gapless
seq and handed to the live listeners; a camera that is not online, a model that is not ready, too many open jobs,
a deadline and the stop each give unknown, never pass."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.events.job_stage import VERDICT, Decided, JobStage, TriggerRefused
from daemon.events.jobs import JobRules, Look, Verdict, Why
from daemon.frames import BBox, CameraState, CameraStatus, Detection, ModelInfo, utc_now
from daemon.metrics import Metrics
from daemon.outbox import Outbox, OutboxLimits
from tests.integration.payloads import validate_message

MODEL = ModelInfo("m", "0" * 64, 640, "cpu", ("scratch",))
RULES = JobRules(frames=2, confirm_hits=2, timeout_ms=400, max_frame_age_ms=500)
SCRATCH = Detection("scratch", 0, 0.9, BBox(300, 100, 330, 120))


class Harness:
    def __init__(self, tmp_path: Path, rules: JobRules = RULES, **kwargs: object) -> None:
        self.stop = threading.Event()
        self.outbox = Outbox(tmp_path / "o.db", OutboxLimits(10_000_000, 1e9, kind_max_bytes={VERDICT: 10_000_000}),
                             synchronous="NORMAL")
        self.ready = True
        self.stage = JobStage("cam", rules, MODEL, self.outbox, self.stop, Metrics(),
                              model_ready=lambda: self.ready, **kwargs)  # type: ignore[arg-type]
        self.decided: queue.Queue[Decided] = queue.Queue()
        self.stage.listen(self.decided.put)
        self.seq = 0

    def online(self, state: CameraState = CameraState.ONLINE) -> None:
        self.stage.camera_changed(CameraStatus("cam", state, "test", utc_now()))

    def frame(self, *detections: Detection) -> None:
        now = time.monotonic()
        self.stage.look(Look(self.seq, now, utc_now(), now, 640, 480, detections))
        self.seq += 1

    def next(self) -> Decided:
        return self.decided.get(timeout=5)

    def stored(self) -> list[dict[str, object]]:
        return [json.loads(e.payload) for e in self.outbox.pending(100)]


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    h.stage.start()
    yield h
    h.stage.stop()
    h.stage.join(5)
    h.outbox.close()


def test_each_trigger_gets_one_verdict_committed_with_a_gapless_seq_and_handed_on(harness: Harness) -> None:
    harness.online()
    first = harness.stage.trigger("plc_modbus", "P-1")
    harness.frame()
    harness.frame()
    passed = harness.next()
    second = harness.stage.trigger("mqtt")
    harness.frame(SCRATCH)
    harness.frame(SCRATCH)
    rejected = harness.next()
    assert (passed.result.verdict, passed.seq, passed.result.trigger.job_id) == (Verdict.PASS, 1, first.job_id)
    assert (rejected.result.verdict, rejected.seq, rejected.result.trigger.part_id) == (Verdict.NG, 2, "cam-1")
    assert second.part_id == "cam-1", "a part id made up when the trigger has none"
    stored = harness.stored()
    assert [(m["seq"], m["result"], m["part_id"]) for m in stored] == [(1, "pass", "P-1"), (2, "ng", "cam-1")]
    assert stored[1]["defects"][0]["label"] == "scratch"  # type: ignore[index]
    assert {m["result_evaluation"] for m in stored} == {"OK", "NotOK"}
    for message in stored:  # the documented schema
        validate_message("lw/cam/verdicts", json.dumps(message).encode())


def test_a_camera_that_is_not_online_gives_unknown_at_once_and_fails_the_open_jobs(harness: Harness) -> None:
    harness.stage.trigger("plc_modbus", "before-online")  # the camera has not connected yet
    assert harness.next().result.reasons == (Why.CAMERA_RECONNECTING,)
    harness.online()
    harness.stage.trigger("plc_modbus", "open")
    harness.frame()
    harness.online(CameraState.RECONNECTING)
    lost = harness.next()
    assert lost.result.verdict is Verdict.UNKNOWN and lost.result.reasons == (Why.CAMERA_RECONNECTING,)


def test_no_frame_by_the_deadline_is_unknown_camera_stale(harness: Harness) -> None:
    harness.online()
    started = time.monotonic()
    harness.stage.trigger("http", "P-9")
    stale = harness.next()
    assert stale.result.verdict is Verdict.UNKNOWN and stale.result.reasons == (Why.CAMERA_STALE,)
    assert time.monotonic() - started >= RULES.timeout_ms / 1000 * 0.99


def test_a_model_not_ready_and_a_trigger_overrun_are_answered_unknown(tmp_path: Path) -> None:
    h = Harness(tmp_path, max_open=2)
    h.stage.start()
    try:
        h.online()
        h.ready = False
        h.stage.trigger("plc_modbus", "cold")
        assert h.next().result.reasons == (Why.MODEL_NOT_READY,)
        h.ready = True
        for part in ("a", "b", "c"):
            h.stage.trigger("plc_modbus", part)
        overrun = h.next()
        assert (overrun.result.trigger.part_id, overrun.result.reasons) == ("c", (Why.TRIGGER_OVERRUN,))
    finally:
        h.stage.stop()
        h.stage.join(5)
        h.outbox.close()


def test_the_stop_answers_every_open_job(tmp_path: Path) -> None:
    h = Harness(tmp_path, rules=JobRules(frames=5, timeout_ms=60_000))
    h.stage.start()
    h.online()
    h.stage.trigger("plc_modbus", "x")
    h.stage.trigger("plc_modbus", "y")
    h.frame()
    h.stage.stop()
    assert h.stage.join(5)
    answers = [h.next(), h.next()]
    assert {(d.result.trigger.part_id, d.result.reasons) for d in answers} == {("x", (Why.STOPPING,)),
                                                                                ("y", (Why.STOPPING,))}
    assert [m["seq"] for m in h.stored()] == [1, 2]
    h.outbox.close()


def test_a_trigger_the_stage_cannot_take_is_refused_to_its_sender_not_left_without_a_verdict(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.stage.start()
    h.online()
    h.stage.stop()  # the daemon stops: the inbox closes
    assert h.stage.join(5)
    with pytest.raises(TriggerRefused, match="stopping"):
        h.stage.trigger("plc_modbus", "late")
    assert h.stage.trigger_message("mqtt", b"late") is None
    assert h.decided.empty()
    h.outbox.close()
