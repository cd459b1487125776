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

    def frame(self, *detections: Detection, captured: float | None = None) -> None:
        now = time.monotonic()
        self.stage.look(Look(self.seq, now if captured is None else captured, utc_now(), now, 640, 480, detections))
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


def test_a_software_triggered_camera_is_fired_per_job_and_each_window_is_the_frames_exposed_for_it(
        tmp_path: Path) -> None:
    """Two jobs open at once: each gets exactly the frames the camera says it exposed for it (bind), not the frames
    that merely came after its trigger; a frame nobody fired for belongs to no job."""
    h = Harness(tmp_path)
    fired: list[tuple[str, int]] = []
    h.stage.fire_with(lambda job_id, count: fired.append((job_id, count)) is None)
    h.stage.start()
    h.online()
    a = h.stage.trigger("plc_modbus", "A")
    b = h.stage.trigger("plc_modbus", "B")
    h.frame(SCRATCH)  # seq 0: exposed for nobody (left from before): ignored by both
    h.stage.bind(a.job_id, 1)
    h.frame()
    h.frame()
    h.stage.bind(b.job_id, 3)
    h.frame(SCRATCH)
    h.frame(SCRATCH)
    answers = {d.result.trigger.part_id: d.result for d in (h.next(), h.next())}
    assert fired == [(a.job_id, 2), (b.job_id, 2)], "fired once per frame of each job, in order"
    assert (answers["A"].verdict, answers["A"].first_seq, answers["A"].last_seq) == (Verdict.PASS, 1, 2)
    assert (answers["B"].verdict, answers["B"].first_seq, answers["B"].last_seq) == (Verdict.NG, 3, 4)
    h.stage.stop()
    h.stage.join(5)
    h.outbox.close()


def test_a_software_trigger_the_camera_cannot_take_or_never_answers_is_unknown(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    calls = iter([False, True])  # the camera's queue is full once, then takes the exposures
    h.stage.fire_with(lambda job_id, count: next(calls))
    h.stage.start()
    h.online()
    h.stage.trigger("mqtt", "refused")
    assert h.next().result.reasons == (Why.TRIGGER_OVERRUN,)
    h.stage.trigger("mqtt", "silent")  # taken, but the camera never sends its frames
    h.frame()  # a frame without a bind is not its
    decided = h.next().result
    assert (decided.verdict, decided.reasons, decided.frames_inspected) == (Verdict.UNKNOWN, (Why.CAMERA_STALE,), 0)
    h.stage.stop()
    h.stage.join(5)
    h.outbox.close()


def test_a_hardware_triggered_camera_frame_is_matched_to_its_job_by_time_even_when_it_comes_first(
        tmp_path: Path) -> None:
    """The line fires the camera and the PLC at once; the frame may be inspected before the PLC's trigger arrives.
    Each frame goes to one job; a job whose frame never came is unknown (frame_missing), never pass."""
    h = Harness(tmp_path, rules=JobRules(frames=1, confirm_hits=1, timeout_ms=2000, max_frame_age_ms=5000,
                                         match_ms=100))
    h.stage.start()
    h.online()
    t0 = time.monotonic()
    h.frame(SCRATCH, captured=t0)  # exposed on the line's pulse...
    early = h.stage.trigger("plc_modbus", "early", at_mono=t0 + 0.05)  # ...the PLC's trigger comes after
    first = h.next().result
    assert (first.trigger.job_id, first.verdict, first.first_seq) == (early.job_id, Verdict.NG, 0)
    h.stage.trigger("plc_modbus", "twin", at_mono=t0 + 0.06)  # no pulse of its own: frame 0 is taken
    h.frame(captured=t0 + 0.5)  # the next part's frame, far past: this job's frame is missing
    twin = h.next().result
    assert (twin.trigger.part_id, twin.verdict, twin.reasons) == ("twin", Verdict.UNKNOWN, (Why.FRAME_MISSING,))
    late = h.stage.trigger("plc_modbus", "late", at_mono=t0 + 0.45)  # this trigger's frame came 50 ms after it
    third = h.next().result
    assert (third.trigger.job_id, third.verdict, third.first_seq) == (late.job_id, Verdict.PASS, 1)
    h.stage.trigger("plc_modbus", "silent")  # and with no frame at all, unknown at the deadline
    assert h.next().result.reasons == (Why.FRAME_MISSING,)
    h.stage.stop()
    h.stage.join(5)
    h.outbox.close()
