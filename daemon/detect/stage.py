"""The detector stage: one thread owns the model and serves every camera, in batches.

Each camera has a lane: its frame hand-off in (a one-frame slot for a live camera, a short queue for a file)
and its results hand-off out. One pass of the loop:

1. takes the waiting frame of each camera that has one, at most one per camera and at most `max_batch`,
   starting after the camera served first last time (round robin: a 30 fps camera cannot starve a 5 fps one);
2. when some cameras have nothing yet, waits at most `batch_wait_s` for them (a ring of the shared bell);
3. runs one batched inference;
4. routes each camera's detections back to its own results hand-off.

Ultralytics' predictor is not thread-safe; this thread is the only one that touches it. A frame that a live
camera replaces before this thread takes it is counted as a drop of that camera (by its hand-off). After the
stop event every lane is drained; a lane whose camera never closes it (a capture stuck in native code) is
given up after `_ABANDON_AFTER_S`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from daemon.detect.model import Detector
from daemon.frames import END_OF_STREAM, Frame, Inference
from daemon.handoff import Bell, Handoff
from daemon.lifecycle import StageThread
from daemon.logs import get_logger
from daemon.metrics import Metrics

log = get_logger("linewatch.detect")

_IDLE_WAIT_S = 0.5  # nothing to do: re-check the stop event this often (a ring wakes the thread at once)
# After the stop event, how long an empty lane's camera has to close it: a read's default deadline, so a frame
# still on its way is inspected, and within the default shutdown deadline (8 s), so a stuck camera's event
# stage still closes its tracks. Other cameras' results are closed as each lane ends: they never wait for it.
_ABANDON_AFTER_S = 5.0


@dataclass(eq=False)
class Lane:
    """One camera's way through the detector."""

    camera_id: str
    frames: Handoff[Frame]
    results: Handoff[Inference]
    done: bool = field(default=False, init=False)


class DetectStage(StageThread):
    def __init__(self, detector: Detector, lanes: Sequence[Lane], bell: Bell, stop: threading.Event, *,
                 max_batch: int = 8, batch_wait_s: float = 0.005, metrics: Metrics | None = None) -> None:
        super().__init__("detect", stop)
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._detector = detector
        self._lanes = list(lanes)
        self._bell = bell
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self._next = 0  # the lane served first in the next batch
        metrics = metrics or Metrics()
        self._inspected = {lane.camera_id: metrics.frames_inspected.labels(lane.camera_id) for lane in lanes}
        self._inference_s = {lane.camera_id: metrics.inference_seconds.labels(lane.camera_id) for lane in lanes}
        self._lost = {lane.camera_id: metrics.inferences_lost.labels(lane.camera_id) for lane in lanes}
        self._batch_size = metrics.batch_size
        self._stopping_since: float | None = None

    def run(self) -> None:
        try:
            while any(not lane.done for lane in self._lanes):
                batch = self._collect()
                if batch:
                    self._inspect(batch)
        finally:
            for lane in self._lanes:
                lane.results.close()

    # -- collecting a batch ---------------------------------------------------------------------------------
    def _collect(self) -> list[tuple[Lane, Frame]]:
        batch: dict[Lane, Frame] = {}
        deadline: float | None = None
        while True:
            seen = self._bell.rings
            self._take(batch)
            waiting = [lane for lane in self._lanes if not lane.done and lane not in batch]
            if len(batch) >= self.max_batch or not waiting or (batch and self.batch_wait_s <= 0):
                break
            now = time.monotonic()
            if batch:
                deadline = now + self.batch_wait_s if deadline is None else deadline
                if now >= deadline:
                    break
                self._bell.wait(seen, deadline - now)
            elif not self._bell.wait(seen, _IDLE_WAIT_S):
                self._abandon_stuck_lanes(now)
        if batch:
            first = self._lanes.index(next(iter(batch)))
            self._next = (first + 1) % len(self._lanes)
        return list(batch.items())

    def _take(self, batch: dict[Lane, Frame]) -> None:
        count = len(self._lanes)
        for offset in range(count):
            if len(batch) >= self.max_batch:
                return
            lane = self._lanes[(self._next + offset) % count]
            if lane.done or lane in batch:
                continue
            item = lane.frames.get(0.0)
            if item is END_OF_STREAM:
                lane.done = True
                lane.results.close()  # its events stage drains and ends; its frames are all inspected
            elif item is not None:
                batch[lane] = item

    def _abandon_stuck_lanes(self, now: float) -> None:
        if not self._stop.is_set():
            return
        self._stopping_since = self._stopping_since or now
        if now - self._stopping_since < _ABANDON_AFTER_S:
            return
        for lane in self._lanes:
            if not lane.done and not len(lane.frames):
                lane.done = True
                lane.frames.close()  # a frame that comes after this is refused, not left uninspected
                lane.results.close()
                log.warning("camera_lane_abandoned", camera_id=lane.camera_id, after_s=_ABANDON_AFTER_S,
                            reason="its capture did not close its frames after the stop (stuck in a native call?)")

    # -- one inference --------------------------------------------------------------------------------------
    def _inspect(self, batch: list[tuple[Lane, Frame]]) -> None:
        with self.progress.busy():
            found, elapsed_ms = self._detector.infer_frames([frame for _, frame in batch])
        self._batch_size.observe(len(batch))
        for (lane, frame), detections in zip(batch, found, strict=True):
            self._inspected[lane.camera_id].inc()
            self._inference_s[lane.camera_id].observe(elapsed_ms / 1000.0)
            # The model's input is spent: an event stage keeping a frame (a defect's best view) keeps the image only
            if not lane.results.put(Inference(replace(frame, prepared=None), detections, elapsed_ms)):
                # Only a stopping or ended event stage refuses a result (the hand-off waits otherwise). Say so, and
                # count it: a result with detections that vanished here would be a defect nobody heard of.
                self._lost[lane.camera_id].inc()
                log.error("inference_lost", camera_id=lane.camera_id, frame_seq=frame.seq,
                          detections=len(detections), reason="the event stage stopped before it took the result")
