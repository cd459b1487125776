"""The detector stage: one thread that takes frames from the hand-off and runs the model on each."""

from __future__ import annotations

import threading

from daemon.detect.model import Detector
from daemon.frames import Frame, Inference
from daemon.handoff import Handoff, consume
from daemon.lifecycle import CameraStage
from daemon.logs import get_logger
from daemon.metrics import Metrics

log = get_logger("linewatch.detect")


class DetectStage(CameraStage):
    kind = "detect"

    def __init__(
        self,
        camera_id: str,
        detector: Detector,
        frames: Handoff[Frame],
        results: Handoff[Inference],
        stop: threading.Event,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(camera_id, stop)
        self._detector = detector
        self._frames = frames
        self._results = results
        metrics = metrics or Metrics()
        self._inspected = metrics.frames_inspected.labels(camera_id)
        self._inference_s = metrics.inference_seconds.labels(camera_id)
        self._lost = metrics.inferences_lost.labels(camera_id)
        self.last_inference_ms = 0.0

    def run(self) -> None:
        try:
            # Frames already captured are inspected after a stop too, not thrown away.
            consume(self._frames, self._inspect)
        finally:
            self._results.close()

    def _inspect(self, frame: Frame) -> None:
        with self.progress.busy():
            detections, elapsed_ms = self._detector.infer(frame.image)
        self._inspected.inc()
        self._inference_s.observe(elapsed_ms / 1000.0)
        self.last_inference_ms = elapsed_ms
        if not self._results.put(Inference(frame, detections, elapsed_ms)):
            # Only a stopping pipeline refuses a result (the hand-off waits otherwise). Say so, and count it:
            # a result with detections that vanished here would be a defect nobody heard of.
            self._lost.inc()
            log.error("inference_lost", frame_seq=frame.seq, detections=len(detections),
                      reason="the event stage stopped before it took the result")
