"""The job stage: one camera's inspection jobs on their own thread (jobs.py judges them).

Everything the stage needs comes through one bounded inbox, in the order it happened: the event stage's inspected
frames (`Look`), triggers (from the PLC servers, MQTT, HTTP, a photo-eye) and the camera's state. Nobody waits on
it: the producers are event loops and the camera's threads. A trigger it cannot take (the daemon stopping, or the
stage stuck behind a failing disk) is refused to its sender at once (TriggerRefused: no TriggerAck on Modbus,
Bad_InvalidState on OPC UA, 503 on HTTP), so that every trigger taken gets exactly one verdict; a frame it cannot
take is counted and leaves a gap in its jobs' windows (frames dropped: unknown, never pass).

A software-triggered camera is fired from here, once per frame of each job taken (`fire_with`); the capture thread
answers with the frame the camera exposed first for it (`bind`), ahead of the frame itself, so the window is exact.
A hardware-triggered camera's frames may be inspected before the PLC's trigger arrives: the last few are kept and
matched to a new job by time (`JobRules.match_ms`), each frame to one job only.

Each verdict is committed to the outbox (kind `verdict`: MQTT gets it at least once, with a gapless seq per camera)
and then handed to the live listeners (the PLC servers), which take it only while it is fresh.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from daemon.events.commit import Committer
from daemon.events.jobs import Job, JobResult, JobRules, Look, Trigger, Verdict, Why, part_id_from_message
from daemon.events.schema import render_verdict
from daemon.events.snapshots import SnapshotStage
from daemon.frames import END_OF_STREAM, CameraState, CameraStatus, ModelInfo, utc_now
from daemon.handoff import DropPolicy, Handoff
from daemon.lifecycle import CameraStage
from daemon.logs import get_logger
from daemon.metrics import Metrics
from daemon.outbox import Outbox, StoredEvent
from daemon.payloads import CURRENT, Release

log = get_logger("linewatch.jobs")

VERDICT = "verdict"  # the outbox kind
INBOX_CAPACITY = 1024
MAX_OPEN_JOBS = 8  # jobs open at once per camera; a trigger beyond is answered at once: unknown, trigger_overrun
_IDLE_S = 0.5


class TriggerRefused(Exception):
    """The job stage could not take a trigger (stopping, or its inbox full): no job, no verdict; tell the sender."""


@dataclass(frozen=True, slots=True)
class Decided:
    """A verdict as the live outputs get it: the result and its stored seq (None if the outbox could not keep it)."""

    result: JobResult
    seq: int | None


@dataclass(frozen=True, slots=True)
class Bound:
    """A software-triggered camera exposed job `job_id`'s first frame as `frame_seq`."""

    job_id: str
    frame_seq: int


Listener = Callable[[Decided], None]
Fire = Callable[[str, int], bool]  # (job id, frames): expose them; False when the camera cannot take them
_Item = Look | Trigger | CameraStatus | Bound
RECENT_LOOKS = 64  # inspected frames kept for hardware-triggered jobs whose trigger comes after the frame


class JobStage(CameraStage):
    kind = "jobs"

    def __init__(self, camera_id: str, rules: JobRules, model: ModelInfo, outbox: Outbox,
                 stop: threading.Event, metrics: Metrics, *, model_ready: Callable[[], bool] = lambda: True,
                 max_open: int = MAX_OPEN_JOBS, snapshots: SnapshotStage | None = None,
                 release: Release = CURRENT) -> None:
        super().__init__(camera_id, stop)
        self.rules = rules
        self._model = model
        self._commit = Committer(camera_id, outbox, stop, metrics, kind=VERDICT)
        self._metrics = metrics
        self._model_ready = model_ready
        self._max_open = max_open
        self._release = release  # the payloads' format (LINEWATCH_MQTT__PAYLOADS)
        self._snapshots = snapshots  # an ng verdict's best view, as a defect event's (LINEWATCH_SNAPSHOTS__MODE)
        self.inbox: Handoff[_Item] = Handoff(f"jobs:{camera_id}", INBOX_CAPACITY, DropPolicy.WAIT, stop)
        self._listeners: list[Listener] = []
        self._open: list[Job] = []
        self._camera = CameraState.CONNECTING
        self._previous: tuple[int, float] | None = None  # the last inspected frame's (seq, capture time)
        self._fire: Fire | None = None
        # Hardware trigger: recent frames as [look, the frame before it, taken by a job's window]
        self._recent: collections.deque[list[Any]] = collections.deque(maxlen=RECENT_LOOKS)
        self._counter = itertools.count(1)
        self.last: Decided | None = None  # the latest verdict
        # Free-run: the camera's own triggers (a photo-eye, a hardware line) start jobs. On unless a PLC stopped it
        # (OPC UA Stop; StartContinuous turns it on again); triggers from a PLC, MQTT or HTTP are always taken.
        self.free_run = True

    @property
    def model_ready(self) -> bool:
        return self._model_ready()

    @property
    def camera_online(self) -> bool:
        return self._camera is CameraState.ONLINE

    @property
    def ready(self) -> bool:
        """A trigger now would be inspected: the camera online, the model ready, a job free (read from any thread)."""
        return self._camera is CameraState.ONLINE and self._model_ready() and len(self._open) < self._max_open

    @property
    def open_jobs(self) -> int:
        return len(self._open)

    def listen(self, listener: Listener) -> None:
        """Call `listener` with each verdict, on this stage's thread, after it is committed. Keep it quick."""
        self._listeners.append(listener)

    # -- from other threads ---------------------------------------------------------------------------------------
    def trigger(self, source: str, part_id: str | None = None, *, frame_seq: int | None = None,
                at_mono: float | None = None) -> Trigger:
        """Start a job (thread-safe); returns its trigger at once, job id included. A part id that is empty or not
        given is made up from the job's number."""
        job_id = str(uuid.uuid4())
        trigger = Trigger(self.camera_id, job_id, part_id or f"{self.camera_id}-{next(self._counter)}", source,
                          time.monotonic() if at_mono is None else at_mono, utc_now(), frame_seq)
        if not self.inbox.offer(trigger):
            why = "stopping" if self.inbox.closed else "busy"
            self._metrics.triggers_refused.labels(self.camera_id, source).inc()
            log.warning("trigger_refused", reason=why, part_id=trigger.part_id, source=source)
            raise TriggerRefused(f"camera {self.camera_id} takes no trigger now ({why})")
        return trigger

    def trigger_message(self, source: str, payload: bytes) -> Trigger | None:
        """A trigger from a message (MQTT, HTTP): its part id checked first; None (logged) when it is not one."""
        try:
            part_id = part_id_from_message(payload)
        except ValueError as exc:
            self._metrics.triggers_refused.labels(self.camera_id, source).inc()
            log.warning("trigger_refused", source=source, error=str(exc)[:200], payload_bytes=len(payload))
            return None
        try:
            return self.trigger(source, part_id)
        except TriggerRefused:
            return None  # counted and logged by trigger()

    def camera_changed(self, status: CameraStatus) -> None:
        """From the capture thread: the state counts at once for new triggers; the open jobs hear it in order."""
        self._camera = status.state
        self.inbox.offer(status)  # refused: the open jobs end at their deadline instead (unknown either way)

    def look(self, look: Look) -> None:
        if not self.inbox.offer(look):
            self._metrics.job_frames_missed.labels(self.camera_id).inc()  # a gap in the windows: never a pass

    def fire_with(self, fire: Fire) -> None:
        """A software-triggered camera: each job taken fires it `frames` times; jobs wait for `bind`."""
        self._fire = fire

    def bind(self, job_id: str, frame_seq: int) -> None:
        """From the capture thread, before it hands the frame on: job `job_id`'s window starts at `frame_seq`."""
        self.inbox.offer(Bound(job_id, frame_seq))  # refused: the job ends unknown at its deadline

    def watch_model(self, ready: Callable[[], bool]) -> None:
        """Whether the model can inspect (the composition root's detector check), for triggers and the PLC."""
        self._model_ready = ready

    # -- the thread -------------------------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while True:
                deadline = min((job.deadline for job in self._open), default=None)
                timeout = _IDLE_S if deadline is None else max(0.0, min(_IDLE_S, deadline - time.monotonic()))
                item = self.inbox.get(timeout)
                if item is END_OF_STREAM:
                    break
                with self.progress.busy():
                    if item is not None:
                        self._take(item)
                    self._expire()
        finally:
            for job in list(self._open):  # the daemon stops: every open job gets its answer
                try:
                    self._decided(job, Why.STOPPING)
                except Exception:  # a broken outbox: the others are still answered (to the PLC, live)
                    log.exception("verdict_lost_at_stop", job_id=job.trigger.job_id)
                    self._open.remove(job)
            if self._snapshots is not None:
                self._snapshots.jobs.close()  # after the last ng's picture: the encoder drains and ends

    def stop(self, deadline: float | None = None) -> None:
        super().stop(deadline)
        self.inbox.close()  # stopped after the event stage: nothing more comes; what is open is answered

    def close_inbox(self) -> None:
        """No more input: the stage answers what is open and ends (the event stage calls it when it ends)."""
        self.inbox.close()

    def _take(self, item: _Item) -> None:
        if isinstance(item, Trigger):
            self._start(item)
        elif isinstance(item, CameraStatus):
            # A camera that reconnects or stalls fails its open jobs now; one that went offline (its stream ended,
            # the daemon stops) leaves them to the frames still on their way and to the stop.
            if item.state in (CameraState.RECONNECTING, CameraState.STALLED):
                for job in list(self._open):
                    self._decided(job, Why.CAMERA_RECONNECTING)
        elif isinstance(item, Bound):
            for job in self._open:
                if job.trigger.job_id == item.job_id:
                    job.bind(item.frame_seq)
        else:
            taken = False
            for job in list(self._open):  # every job sees every frame: before, in or past its window
                taken = self._observe(job, item, self._previous, taken)
            if self.rules.match_ms:
                self._recent.append([item, self._previous, taken])
            self._previous = (item.frame_seq, item.captured_mono)

    def _observe(self, job: Job, look: Look, previous: tuple[int, float] | None, taken: bool) -> bool:
        """One job sees one frame (then decides if it can); returns whether an earlier or this job's window has it."""
        in_window = job.observe(look, previous, taken)
        self._decided(job)
        return taken or (bool(job.rules.match_ms) and in_window)

    def _start(self, trigger: Trigger) -> None:
        if trigger.source == "photo_eye" and not self.free_run:
            self._metrics.triggers_refused.labels(self.camera_id, trigger.source).inc()
            return  # free-run is off: the PLC starts the jobs
        job = Job(trigger, self.rules, bind_only=self._fire is not None)
        self._metrics.jobs_triggered.labels(self.camera_id, trigger.source).inc()
        refusal = (Why.CAMERA_RECONNECTING if self._camera is not CameraState.ONLINE else
                   Why.MODEL_NOT_READY if not self._model_ready() else
                   Why.TRIGGER_OVERRUN if len(self._open) >= self._max_open else None)
        if refusal is None and self._fire is not None and not self._fire(trigger.job_id, max(1, self.rules.frames)):
            refusal = Why.TRIGGER_OVERRUN  # the camera has more exposures waiting than it can take
        self._open.append(job)
        self._decided(job, refusal)
        if refusal is None and self.rules.match_ms:
            for entry in self._recent:  # frames inspected before the trigger came, oldest first
                if job not in self._open or job.over:
                    break
                look, previous, taken = entry
                entry[2] = self._observe(job, look, previous, taken)

    def _expire(self) -> None:
        now = time.monotonic()
        for job in list(self._open):
            if now >= job.deadline:
                self._decided(job, Why.FRAME_MISSING if job.waiting_for_match else
                              Why.CAMERA_STALE if job.inspected == 0 else Why.TIMEOUT)

    def _decided(self, job: Job, final: Why | None = None) -> None:
        """Commit and hand on the job's verdict if it has one now (always, when `final` is given)."""
        result = job.decide(time.monotonic(), utc_now(), final=final)
        if result is None:
            return
        snapshot, picture = None, None
        top = result.findings[0] if result.findings else None
        if top is not None and top.image is not None and self._snapshots is not None:
            snapshot, picture = self._snapshots.plan(top.image, top.bbox, f"{top.label} {top.confidence:.2f}")
        stored = self._store(result, snapshot)
        self._open.remove(job)  # only now: a store that raised leaves it open, to be answered at the stop
        if stored is not None and picture is not None and self._snapshots is not None:
            self._snapshots.submit(picture)  # the pictures follow their verdict, never come without one
        decided = Decided(result, None if stored is None else stored.seq)
        self.last = decided
        self._metrics.verdicts.labels(self.camera_id, result.verdict.value).inc()
        self._metrics.verdict_latency_seconds.labels(self.camera_id).observe(result.latency_ms / 1000.0)
        (log.info if result.verdict is Verdict.PASS else log.warning)("verdict", result=result.verdict.value,
                reasons=[r.value for r in result.reasons], part_id=result.trigger.part_id, job_id=result.trigger.job_id,
                seq=decided.seq, latency_ms=round(result.latency_ms, 1), frames=result.frames_inspected,
                defects=[f.label for f in result.findings], source=result.trigger.source)
        for listener in self._listeners:
            try:
                listener(decided)
            except Exception:
                log.exception("verdict_listener_failed", job_id=result.trigger.job_id)

    def _store(self, result: JobResult, snapshot: dict[str, Any] | None) -> StoredEvent | None:
        def render(seq: int) -> bytes:
            return render_verdict(result, seq=seq, model=self._model, committed_at=utc_now(), snapshot=snapshot,
                                  release=self._release)

        return self._commit.store(result.trigger.job_id, result.first_seq or -1, result.trigger.at_mono, render)
