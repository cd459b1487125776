"""Judging one inspection job (jobs.py): pass only with every frame of the window inspected on time; ng on a defect
confirmed in the region; unknown, with its reasons, for everything else. Pure logic: frames are described, not drawn."""

from __future__ import annotations

from daemon.events.jobs import Job, JobRules, Look, Trigger, Verdict, Why
from daemon.frames import BBox, Detection, utc_now

INTERVAL = 1 / 15
RULES = JobRules(frames=3, confirm_hits=2, timeout_ms=2000, max_frame_age_ms=500, roi=(0.25, 0.0, 0.75, 0.5))
SCRATCH_IN = Detection("scratch", 0, 0.9, BBox(300, 100, 330, 120))  # centre (315, 110): inside the region
SCRATCH_OUT = Detection("scratch", 0, 0.9, BBox(40, 100, 70, 120))  # left of it


def trigger(at: float = 10.0, frame_seq: int | None = None, source: str = "plc_modbus") -> Trigger:
    return Trigger("cam", "job-1", "part-1", source, at, utc_now(), frame_seq)


def look(seq: int, *detections: Detection, late_ms: float = 30.0, start: float = 10.0) -> Look:
    captured = start + (seq - 100) * INTERVAL + 0.01
    return Look(seq, captured, utc_now(), captured + late_ms / 1000, 640, 480, tuple(detections))


def run(job: Job, looks: list[Look]) -> Verdict | None:
    """Feed the camera's inspected frames as the job stage does (every frame to every job); the first verdict."""
    previous = (99, 10.0 - INTERVAL + 0.01)
    for item in looks:
        job.observe(item, previous)
        previous = (item.frame_seq, item.captured_mono)
        result = job.decide(item.inspected_mono, utc_now())
        if result is not None:
            return result.verdict
    return None


def test_every_frame_of_the_window_inspected_on_time_and_nothing_found_is_a_pass() -> None:
    job = Job(trigger(), RULES)
    assert run(job, [look(100), look(101)]) is None, "no verdict before the window is complete"
    result = job.decide(10.5, utc_now())
    assert result is None
    job.observe(look(102), (101, 0.0))
    result = job.decide(10.5, utc_now())
    assert result is not None and result.verdict is Verdict.PASS and result.reasons == ()
    assert (result.frames_inspected, result.first_seq, result.last_seq) == (3, 100, 102)
    assert result.verdict.evaluation == "OK"


def test_a_defect_seen_in_enough_frames_inside_the_region_is_ng_at_once() -> None:
    job = Job(trigger(), RULES)
    assert run(job, [look(100, SCRATCH_IN), look(101, SCRATCH_IN)]) is Verdict.NG  # before the third frame
    result = job.decide(11.0, utc_now())
    assert result is not None and result.findings[0].label == "scratch" and result.findings[0].frames == 2
    assert result.verdict.evaluation == "NotOK"


def test_one_sighting_below_the_confirm_count_and_defects_outside_the_region_do_not_make_ng() -> None:
    assert run(Job(trigger(), RULES), [look(100, SCRATCH_IN), look(101), look(102)]) is Verdict.PASS
    assert run(Job(trigger(), RULES), [look(s, SCRATCH_OUT) for s in (100, 101, 102)]) is Verdict.PASS


def test_a_frame_the_detector_skipped_makes_it_unknown_but_never_hides_a_reject() -> None:
    job = Job(trigger(), RULES)
    assert run(job, [look(100), look(102)]) is Verdict.UNKNOWN  # 101 never inspected: the window ends at 102
    result = job.decide(11.0, utc_now())
    assert result is not None and result.reasons == (Why.FRAMES_DROPPED,) and result.frames_dropped == 1
    assert run(Job(trigger(), RULES), [look(100, SCRATCH_IN), look(102, SCRATCH_IN)]) is Verdict.NG
    tolerant = JobRules(frames=3, confirm_hits=2, max_dropped_frames=1, roi=RULES.roi)
    assert run(Job(trigger(), tolerant), [look(100), look(102)]) is Verdict.PASS


def test_frames_skipped_between_a_plcs_trigger_and_the_first_inspected_frame_count_as_dropped() -> None:
    # The trigger comes at 10.0; frame 100 (captured 10.01) was skipped by the live hand-off, 101 is the first seen
    job = Job(trigger(), RULES)
    assert run(job, [look(101), look(102)]) is Verdict.UNKNOWN
    result = job.decide(11.0, utc_now())
    assert result is not None and result.first_seq == 100 and result.frames_dropped == 1
    # A frame skipped that was captured before the trigger is not the job's
    early = Job(trigger(at=10.02), RULES)
    assert run(early, [look(101), look(102), look(103)]) is Verdict.PASS


def test_a_photo_eye_job_starts_at_its_frame_even_when_that_frame_was_not_inspected() -> None:
    job = Job(trigger(frame_seq=100, source="photo_eye"), RULES)
    assert run(job, [look(101), look(102)]) is Verdict.UNKNOWN
    result = job.decide(11.0, utc_now())
    assert result is not None and result.reasons == (Why.FRAMES_DROPPED,) and result.first_seq == 100
    assert run(Job(trigger(frame_seq=100, source="photo_eye"), RULES), [look(s) for s in (99, 100, 101, 102)]) \
        is Verdict.PASS


def test_a_late_frame_makes_it_unknown() -> None:
    job = Job(trigger(), RULES)
    assert run(job, [look(100), look(101, late_ms=900), look(102)]) is Verdict.UNKNOWN
    result = job.decide(11.0, utc_now())
    assert result is not None and result.reasons == (Why.FRAME_LATE,)


def test_a_final_reason_gives_unknown_unless_a_defect_was_confirmed() -> None:
    job = Job(trigger(), RULES)
    run(job, [look(100)])
    result = job.decide(12.1, utc_now(), final=Why.TIMEOUT)
    assert result is not None and result.verdict is Verdict.UNKNOWN and result.reasons == (Why.TIMEOUT,)
    assert result.verdict.evaluation == "NotDecidable"
    assert abs(result.latency_ms - 2100.0) < 1e-6


def test_a_time_window_is_decided_at_the_first_frame_past_it_counting_what_was_skipped() -> None:
    rules = JobRules(frames=0, window_ms=150, confirm_hits=2, roi=RULES.roi)
    # frames captured at +10, +77, +143 ms are the window; the one at +210 ends it
    assert run(Job(trigger(), rules), [look(s) for s in (100, 101, 102)]) is None, "not before a frame past it"
    assert run(Job(trigger(), rules), [look(s) for s in (100, 101, 102, 103)]) is Verdict.PASS
    # the detector skipped the window's last frame (+143): the frame past the window shows it, at once
    job = Job(trigger(), rules)
    assert run(job, [look(100), look(101), look(103)]) is Verdict.UNKNOWN
    result = job.decide(10.3, utc_now())
    assert result is not None and result.frames_dropped == 1 and result.reasons == (Why.FRAMES_DROPPED,)


def test_a_window_of_one_frame_confirms_with_one_sighting() -> None:
    rules = JobRules(frames=0, window_ms=40, confirm_hits=2, roi=RULES.roi)  # only the frame at +10 ms is in it
    assert run(Job(trigger(), rules), [look(100, SCRATCH_IN), look(101)]) is Verdict.NG


def test_a_skipped_last_frame_is_known_at_the_next_frame_not_at_the_timeout() -> None:
    job = Job(trigger(), RULES)
    assert run(job, [look(100), look(101), look(103)]) is Verdict.UNKNOWN  # 102 skipped; 103 is past the window
    result = job.decide(10.3, utc_now())
    assert result is not None and result.reasons == (Why.FRAMES_DROPPED,) and result.frames_dropped == 1


def test_a_window_the_detector_skipped_entirely_is_never_a_pass_whatever_the_tolerance() -> None:
    tolerant = JobRules(frames=3, confirm_hits=2, max_dropped_frames=3, roi=RULES.roi)
    # The PLC's trigger at 10.0; frames 100..102 all skipped; 103 (captured +210 ms) is the first inspected
    job = Job(trigger(), tolerant)
    assert run(job, [look(103, SCRATCH_IN)]) is Verdict.UNKNOWN, "a frame past the window is not the part's"
    result = job.decide(11.0, utc_now())
    assert result is not None and result.first_seq == 100 and result.frames_inspected == 0


def test_a_sighting_that_skipped_frames_might_have_confirmed_is_unknown_not_a_pass() -> None:
    rules = JobRules(frames=3, confirm_hits=3, max_dropped_frames=1, roi=RULES.roi)
    job = Job(trigger(), rules)
    assert run(job, [look(100, SCRATCH_IN), look(102, SCRATCH_IN)]) is Verdict.UNKNOWN
    result = job.decide(11.0, utc_now())
    assert result is not None and result.reasons == (Why.FRAMES_DROPPED,)
