"""The detector stage: one thread that takes frames from the hand-off and runs the model on each."""

from __future__ import annotations

import threading

from daemon.detect.model import Detector
from daemon.frames import Frame, Inference
from daemon.handoff import Handoff, consume
from daemon.lifecycle import CameraStage


class DetectStage(CameraStage):
    kind = "detect"

    def __init__(
        self,
        camera_id: str,
        detector: Detector,
        frames: Handoff[Frame],
        results: Handoff[Inference],
        stop: threading.Event,
    ) -> None:
        super().__init__(camera_id, stop)
        self._detector = detector
        self._frames = frames
        self._results = results
        self.frames_done = 0
        self.last_inference_ms = 0.0

    def run(self) -> None:
        try:
            # Frames already captured are inspected after a stop too, not thrown away.
            consume(self._frames, self._inspect)
        finally:
            self._results.close()

    def _inspect(self, frame: Frame) -> None:
        detections, elapsed_ms = self._detector.infer(frame.image)
        self.frames_done += 1
        self.last_inference_ms = elapsed_ms
        self._results.put(Inference(frame, detections, elapsed_ms))
