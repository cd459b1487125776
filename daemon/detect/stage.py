"""The detector stage: one worker thread per stream of the model (threads.py) serves every camera, in batches.

Each camera has a lane: its frame hand-off in (a one-frame slot for a live camera, a short queue for a file)
and its results hand-off out. One pass of a worker:

1. takes the waiting frame of each camera that has one, in rounds of at most one frame per camera, starting
   after the camera served first last time (round robin: a 30 fps camera cannot starve a 5 fps one), until
   `max_batch` frames or nothing is waiting. A live camera's slot holds one frame; a file or a triggered camera
   may have several waiting (its read-ahead), and one inference for several of them is the model at its best:
   a pass takes up to its hand-off's capacity shared among the streams, so that each stream has some to work
   on and the camera's frames in flight stay within twice its hand-off (the buffers its capture reuses).
   A tiled camera's frame is many inputs (tiles.py), of which a pass takes at most that camera's `per_batch`,
   the rest in the passes after: its next frame is taken once every input of this one was;
2. when some cameras have nothing yet, waits at most `batch_wait_s` for them (a ring of the shared bell);
3. runs one batched inference on the worker's own copy of the model (Ultralytics' predictor is not
   thread-safe: no other thread touches that copy);
4. routes each camera's detections back to its own results hand-off (a tiled frame's once its last inputs are
   inspected, merged across its tiles).

One worker takes frames at a time, and each pass is numbered as it takes them; passes are routed in that order,
whichever inference ends first. So each camera's results (and the close of its lane) reach its event stage in
the order its frames were taken, while the inferences run side by side. A frame that a live camera replaces
before a worker takes it is counted as a drop of that camera (by its hand-off). After the stop event every lane
is drained; a lane whose camera never closes it (a capture stuck in native code) is given up after
`_ABANDON_AFTER_S`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial

from daemon.detect.model import Detector
from daemon.detect.tiles import Inputs, ModelInput, whole_frame
from daemon.frames import END_OF_STREAM, Detection, Frame, Inference
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


def frames_per_pass(capacity: int, streams: int, *, tiled: bool = False) -> int:
    """The most frames one pass takes from a camera whose hand-off holds `capacity` (above): its read-ahead shared
    among the streams; a tiled camera's one frame (its per_batch tiles are its share)."""
    return 1 if tiled else max(1, capacity // streams)


@dataclass(eq=False)
class Lane:
    """One camera's way through the detector."""

    camera_id: str
    frames: Handoff[Frame]
    results: Handoff[Inference]
    tiler: Inputs | None = None  # a tiled camera's grid and merge (or /detect's, by the camera a request names)
    background: bool = False  # /detect: served only with room left once the cameras had their turn
    done: bool = field(default=False, init=False)
    current: _Job | None = field(default=None, init=False)  # a frame some of whose inputs are still to be taken


@dataclass(eq=False)
class _Job:
    """One frame on its way through the model: its inputs (one, or its tiles), taken in order, perhaps over several
    passes, and what each found."""

    frame: Frame
    inputs: list[ModelInput]
    found: list[tuple[Detection, ...]]
    taken: int = 0
    elapsed_ms: float = 0.0
    lost: bool = False  # a pass with some of its inputs failed: reported once


@dataclass(eq=False)
class _Chunk:
    """The inputs `start` up to `stop` of one camera's frame, in one pass."""

    lane: Lane
    job: _Job
    start: int
    stop: int

    @property
    def last(self) -> bool:
        return self.stop == len(self.job.inputs)


@dataclass(eq=False)
class _Pass:
    """What one pass of a worker took, numbered in the order passes took frames, and what its inference found."""

    number: int
    batch: list[_Chunk]
    ended: list[Lane]  # lanes whose results are closed once this pass's results are routed
    found: list[tuple[Detection, ...]] = field(default_factory=list)  # per input, the chunks' in order
    elapsed_ms: float = 0.0
    failed: bool = False  # its inference raised: its frames were never inspected


class DetectStage(StageThread):
    def __init__(self, detector: Detector, lanes: Sequence[Lane], bell: Bell, stop: threading.Event, *,
                 max_batch: int = 8, batch_wait_s: float = 0.005, metrics: Metrics | None = None) -> None:
        super().__init__("detect", stop)
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._detector = detector
        self.streams = detector.streams
        self._lanes = list(lanes)
        self._bell = bell
        self.max_batch = max_batch
        # inputs in one batch: a frame each, or up to a tiled camera's per_batch tiles
        self.max_inputs = max([max_batch, *(lane.tiler.per_batch for lane in lanes if lane.tiler is not None)])
        self.batch_wait_s = batch_wait_s
        # frames one pass takes from a lane (above): a tiled one gives one frame's share of tiles
        self._per_pass = {lane: frames_per_pass(lane.frames.capacity, self.streams, tiled=lane.tiler is not None)
                          for lane in lanes}
        self._taking = threading.Lock()  # held by the one worker taking frames; guards _next, _passes, lane.done
        self._next = 0  # the lane served first in the next batch
        self._passes = 0  # passes numbered so far
        self._routing = threading.Lock()  # guards _routed and _finished
        self._routed = 0  # the number of the next pass to route
        self._finished: dict[int, _Pass] = {}  # passes whose inference ended before an earlier one's
        metrics = metrics or Metrics()
        self._inspected = {lane.camera_id: metrics.frames_inspected.labels(lane.camera_id) for lane in lanes}
        self._inference_s = {lane.camera_id: metrics.inference_seconds.labels(lane.camera_id) for lane in lanes}
        self._lost = {lane.camera_id: metrics.inferences_lost.labels(lane.camera_id) for lane in lanes}
        self._batch_size = metrics.batch_size
        self._stopping_since: float | None = None

    def run(self) -> None:
        helpers = [self.helper(str(stream), partial(self._work, stream)) for stream in range(1, self.streams)]
        try:
            for thread in helpers:
                thread.start()
            # Reported at once, not when run() ends: run() first waits for the other workers, which leave on it
            self._guarded(partial(self._work, 0), self.name)
        finally:
            for thread in helpers:
                if thread.ident is not None:  # started
                    thread.join()
            for lane in self._lanes:
                lane.results.close()

    def _work(self, stream: int) -> None:
        """One worker: take a batch, run it on this stream's copy of the model, route it; until every lane ended or
        the stage failed (a worker that crashed has reported it; the others leave)."""
        while self.failure is None:
            with self._taking:
                if all(lane.done for lane in self._lanes):
                    return
                ended: list[Lane] = []
                batch = self._collect(ended)
                if not batch and not ended:
                    continue
                work = _Pass(self._passes, batch, ended)
                self._passes += 1
            try:
                if batch:
                    with self.progress.busy():
                        work.found, work.elapsed_ms = self._detector.infer_inputs(
                            [item for chunk in batch for item in chunk.job.inputs[chunk.start:chunk.stop]], stream)
            except BaseException:
                work.failed = True  # its frames are counted lost; the passes after it still reach their cameras
                raise
            finally:
                self._route(work)

    # -- collecting a batch ---------------------------------------------------------------------------------
    def _collect(self, ended: list[Lane]) -> list[_Chunk]:
        batch: list[_Chunk] = []
        deadline: float | None = None
        while True:
            seen = self._bell.rings
            self._take(batch, ended)
            served = {chunk.lane for chunk in batch}
            waiting = [lane for lane in self._lanes if not lane.done and not lane.background and lane not in served]
            if self._full(batch) or not waiting or (batch and self.batch_wait_s <= 0):
                break
            now = time.monotonic()
            if batch:
                deadline = now + self.batch_wait_s if deadline is None else deadline
                if now >= deadline:
                    break
                self._bell.wait(seen, deadline - now)
            elif ended:
                break  # route the end of a lane now: its event stage finishes its tracks
            elif not self._bell.wait(seen, _IDLE_WAIT_S):
                self._abandon_stuck_lanes(now, ended)
        cameras = [chunk.lane for chunk in batch if not chunk.lane.background]
        if cameras:
            self._next = (self._lanes.index(cameras[0]) + 1) % len(self._lanes)
        return batch

    def _full(self, batch: list[_Chunk]) -> bool:
        return len(batch) >= self.max_batch or sum(c.stop - c.start for c in batch) >= self.max_inputs

    def _take(self, batch: list[_Chunk], ended: list[Lane]) -> None:
        """Adds to the batch in rounds, one frame (or one tiled frame's share) per lane in each, up to the lane's
        frames per pass: a lane's frames enter the batch, and so reach its event stage, in the order it handed
        them over."""
        count = len(self._lanes)
        order = [self._lanes[(self._next + offset) % count] for offset in range(count)]
        order.sort(key=lambda lane: lane.background)  # the cameras first, in their round robin
        given = Counter(chunk.lane for chunk in batch)
        while True:
            grew = False
            for lane in order:
                if self._full(batch):
                    return
                if lane.done or given[lane] >= self._per_pass[lane]:
                    continue
                chunk = self._next_chunk(lane, sum(c.stop - c.start for c in batch), ended)
                if chunk is not None:
                    batch.append(chunk)
                    given[lane] += 1
                    grew = True
            if not grew:
                return

    def _next_chunk(self, lane: Lane, inputs: int, ended: list[Lane]) -> _Chunk | None:
        """The lane's next inputs for a batch that holds `inputs` already: the rest of a tiled frame, or its next
        waiting frame; None when it has none (and, at its END_OF_STREAM, the lane is done and ended)."""
        job = lane.current
        if job is None:
            item = lane.frames.get(0.0)
            if item is END_OF_STREAM:
                lane.done = True
                ended.append(lane)  # its results close after its frames in flight: its event stage then ends
                return None
            if item is None:
                return None
            frames = lane.tiler.inputs(item) if lane.tiler is not None else whole_frame(item)
            job = _Job(item, frames, [()] * len(frames))
        share = min(len(job.inputs) - job.taken, self.max_inputs - inputs,
                    lane.tiler.per_batch if lane.tiler is not None else 1)
        chunk = _Chunk(lane, job, job.taken, job.taken + share)
        job.taken += share
        lane.current = job if job.taken < len(job.inputs) else None
        return chunk

    def _abandon_stuck_lanes(self, now: float, ended: list[Lane]) -> None:
        if not self._stop.is_set():
            return
        self._stopping_since = self._stopping_since or now
        if now - self._stopping_since < _ABANDON_AFTER_S:
            return
        for lane in self._lanes:
            if not lane.done and not len(lane.frames):
                lane.done = True
                lane.frames.close()  # a frame that comes after this is refused, not left uninspected
                ended.append(lane)
                log.warning("camera_lane_abandoned", camera_id=lane.camera_id, after_s=_ABANDON_AFTER_S,
                            reason="its capture did not close its frames after the stop (stuck in a native call?)")

    # -- routing, in the order the passes took their frames ---------------------------------------------------
    def _route(self, work: _Pass) -> None:
        with self._routing:
            self._finished[work.number] = work
            while (ready := self._finished.pop(self._routed, None)) is not None:
                self._routed += 1
                self._deliver(ready)

    def _deliver(self, work: _Pass) -> None:
        if work.batch:
            self._batch_size.observe(sum(chunk.stop - chunk.start for chunk in work.batch))
        at = 0
        for chunk in work.batch:
            job, size = chunk.job, chunk.stop - chunk.start
            if work.failed:
                if not job.lost:
                    job.lost = True
                    self._lost[chunk.lane.camera_id].inc()
                    log.error("inference_lost", camera_id=chunk.lane.camera_id, frame_seq=job.frame.seq,
                              reason="the model failed on this frame's batch (the detector stops: exit 1)")
            else:
                job.found[chunk.start:chunk.stop] = work.found[at:at + size]
                job.elapsed_ms += work.elapsed_ms
            at += size
            if chunk.last and not job.lost:
                self._hand_over(chunk.lane, job)
        for lane in work.ended:
            lane.results.close()

    def _hand_over(self, lane: Lane, job: _Job) -> None:
        frame, tiler = job.frame, lane.tiler
        detections = tiler.merge_for(frame, job.inputs, job.found) if tiler is not None else job.found[0]
        self._inspected[lane.camera_id].inc()
        self._inference_s[lane.camera_id].observe(job.elapsed_ms / 1000.0)
        # The model's input is spent: an event stage keeping a frame (a defect's best view) keeps the image only
        if not lane.results.put(Inference(replace(frame, prepared=None), detections, job.elapsed_ms)):
            # Only a stopping or ended event stage refuses a result (the hand-off waits otherwise). Say so, and
            # count it: a result with detections that vanished here would be a defect nobody heard of.
            self._lost[lane.camera_id].inc()
            log.error("inference_lost", camera_id=lane.camera_id, frame_seq=frame.seq,
                      detections=len(detections), reason="the event stage stopped before it took the result")
