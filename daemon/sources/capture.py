"""The capture stage: one thread per camera that opens, reads, paces and hands frames on.

It owns reconnecting: a failed open or read is retried with capped, jittered backoff that a shutdown
interrupts at once. Every state change (connecting → online → reconnecting → online … → offline) is logged
once and reported through `on_status`, which the publisher turns into the retained status topic, so the line
knows when this station is blind. A source that delivers nothing for `stall_timeout_s` is torn down and
reopened; a native call that never returns is the watchdog's business (see ops/watchdog.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from daemon.backoff import Backoff
from daemon.buffers import BufferPool
from daemon.exitcodes import FailureKind
from daemon.frames import CameraState, CameraStatus, Frame, Image, Prepared, utc_now
from daemon.handoff import Handoff
from daemon.lifecycle import CameraStage
from daemon.logs import get_logger
from daemon.metrics import Metrics
from daemon.sources.base import IDLE, FiredSource, FrameSource, SourceFatal, SourceUnavailable

log = get_logger("linewatch.capture")
_T = TypeVar("_T")


class CaptureStage(CameraStage):
    kind = "capture"

    def __init__(
        self,
        camera_id: str,
        source: FrameSource,
        handoff: Handoff[Frame],
        stop: threading.Event,
        *,
        backoff: Backoff,
        stall_timeout_s: float,
        on_status: Callable[[CameraStatus], None],
        metrics: Metrics | None = None,
        prepare: Callable[[Image, BufferPool], Prepared | None] | None = None,
        on_trigger: Callable[[str, int, float], None] | None = None,
        on_fired: Callable[[str, int], None] | None = None,
    ) -> None:
        super().__init__(camera_id, stop)
        self._source = source
        # The model's letterboxing, run here, beside the decode, so the detector's thread only runs the model
        self._prepare = prepare
        self._buffers = BufferPool()  # the model's inputs, reused once the detector is done with them
        self._handoff = handoff
        # A trigger that came with a frame (part id, frame seq, capture time): straight to the job stage, never
        # through the frame hand-off, which may drop the frame but must not drop the trigger.
        take = getattr(source, "take_trigger", None)
        self._take_trigger: Callable[[], str | None] | None = take if on_trigger is not None else None
        self._on_trigger = on_trigger
        # A software-triggered camera: each job's first frame binds the job's window (job id, first frame seq);
        # frames the camera lost leave their gap in the numbers.
        self._fired: FiredSource | None = source if hasattr(source, "take_fired") else None  # type: ignore[assignment]
        self._on_fired = on_fired
        self._backoff = backoff
        self.stall_timeout_s = stall_timeout_s
        self._on_status = on_status
        self._metrics = metrics or Metrics()
        self._frames_read = self._metrics.frames_read.labels(camera_id)
        self._reconnects = self._metrics.camera_reconnects.labels(camera_id)
        self._frames_lost = self._metrics.camera_frames_lost.labels(camera_id)
        self._state_metric = self._metrics.camera_state.labels(camera_id)
        self.status = CameraStatus(camera_id, CameraState.CONNECTING, "starting", utc_now())
        self._state_metric.state(CameraState.CONNECTING.value)
        self.frames_read = 0  # this run's frame numbers (Frame.seq); the metric counts the same frames
        self.finished = threading.Event()  # set when the thread has left run(), whatever the reason
        self.last_frame_mono: float | None = None  # readiness: when a frame last came
        self.end_reason = ""  # why the stream ended: "end of stream", "shutdown" or the fatal error

    @property
    def native_call_since(self) -> float | None:
        """When the native call in progress (open or read) began; None outside one. The watchdog reads it."""
        return self.progress.busy_since

    @property
    def backoff(self) -> Backoff:
        return self._backoff

    def _set_state(self, state: CameraState, reason: str) -> None:
        if state is self.status.state and reason == self.status.reason:
            return
        previous = self.status.state
        self.status = CameraStatus(self.camera_id, state, reason, utc_now(), self._backoff.attempts)
        self._state_metric.state(state.value)
        level = "info" if state in (CameraState.ONLINE, CameraState.CONNECTING) else "warning"
        if state is previous and state is CameraState.RECONNECTING:
            level = "debug"  # same outage, new reason: don't flood the log once per attempt
        getattr(log, level)("camera_state", state=state.value, previous=previous.value, reason=reason,
                            attempts=self._backoff.attempts, source=self._source.description)
        self._on_status(self.status)

    def _native(self, call: Callable[[], _T]) -> _T:
        with self.progress.busy():
            return call()

    def _open_source(self) -> None:
        self._source.open()

    def _open(self) -> bool:
        try:
            self._native(self._open_source)
        except SourceUnavailable as exc:
            self._retry_later(str(exc))
            return False
        self._backoff.succeeded()
        self._set_state(CameraState.ONLINE, "streaming")
        return True

    def _retry_later(self, reason: str, *, close: bool = False) -> None:
        delay = self._backoff.failed(reason)
        self._reconnects.inc()
        self._set_state(CameraState.RECONNECTING, reason)  # first: closing a dead camera may take seconds
        if close:
            self._native(self._source.close)
        log.debug("camera_retry", delay_s=round(delay, 2), attempts=self._backoff.attempts, reason=reason)
        self._stop.wait(delay)

    def run(self) -> None:
        end_reason = "shutdown"
        try:
            while not self._stop.is_set():
                if not self._open():
                    continue
                if self._stream():  # True: the source ended (finite file/synthetic stream)
                    end_reason = "end of stream"
                    break
        except SourceFatal as exc:
            # Wiring that can never work (exit 4). Anything else escaping here is a bug: the stage base
            # reports it as one (exit 1), after this `finally` has told the line the camera is offline.
            end_reason = str(exc)
            log.error("camera_fatal", error=str(exc), source=self._source.description)
            self.fail(FailureKind.CAMERA_WIRING, str(exc))
        except BaseException as exc:
            end_reason = f"capture crashed: {type(exc).__name__}: {exc}"
            raise
        finally:
            self.end_reason = end_reason  # read downstream once the hand-off's END_OF_STREAM reaches it
            self._source.close()
            self._handoff.close()  # the detector drains what is left and sees END_OF_STREAM
            self._set_state(CameraState.OFFLINE, end_reason)
            self.finished.set()

    def _stream(self) -> bool:
        """Read until stop, failure or end. Returns True at the end of a finite source."""
        pace = self._source.pace_fps
        interval = 1.0 / pace if pace else 0.0
        next_due = time.monotonic()
        last_frame = time.monotonic()
        while not self._stop.is_set():
            try:
                image = self._native(self._source.read)
            except SourceUnavailable as exc:
                self._retry_later(str(exc), close=True)
                return False
            now = time.monotonic()
            if image is None:
                return True
            if image is IDLE:  # a triggered camera between parts: it answered, it is not stalled
                last_frame = self.last_frame_mono = now
                continue
            if now - last_frame > self.stall_timeout_s:
                # The read did return, but far too late: treat the link as bad and rebuild it.
                self._retry_later(f"no frame for {now - last_frame:.1f} s (stall timeout)", close=True)
                return False
            last_frame = self.last_frame_mono = now
            image.setflags(write=False)
            prepared = self._prepare(image, self._buffers) if self._prepare else None
            if self._fired is not None:
                self._bind()
            captured = getattr(self._source, "captured_mono", None) or now  # the camera's own time, where it has one
            frame = Frame(self.camera_id, self.frames_read, image, min(captured, now), utc_now(), prepared)
            if self._take_trigger is not None and self._on_trigger is not None:
                part_id = self._take_trigger()
                if part_id is not None:
                    self._on_trigger(part_id, frame.seq, now)
            self.frames_read += 1
            self._frames_read.inc()
            if not self._handoff.put(frame) and self._stop.is_set():
                return False
            if interval:
                next_due = max(next_due + interval, now - interval)  # don't burst to catch up after a stall
                self._stop.wait(max(0.0, next_due - time.monotonic()))
        return False

    def _bind(self) -> None:
        """Before numbering the frame: skip the numbers of the frames the camera lost; tell the job stage where the
        job this frame was fired for begins (before the frame is handed on, so the bind comes first)."""
        assert self._fired is not None
        lost = self._fired.take_lost()
        if lost:
            self.frames_read += lost
            self._frames_lost.inc(lost)
        fired = self._fired.take_fired()
        if fired is not None and self._on_fired is not None:
            self._on_fired(fired.job_id, self.frames_read - fired.index)


def blank_frame(camera_id: str, width: int, height: int) -> Frame:
    """A black frame for warm-up runs; never published."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image.setflags(write=False)
    return Frame(camera_id, -1, image, time.monotonic(), utc_now())
