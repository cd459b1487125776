"""The detector stage: one thread that takes frames from the hand-off and runs the model on each."""

from __future__ import annotations

import threading

import structlog

from daemon.detect.model import Detector
from daemon.frames import END_OF_STREAM, Frame, Inference
from daemon.handoff import Handoff
from daemon.logs import get_logger

log = get_logger("linewatch.detect")

_GET_TIMEOUT_S = 0.5  # bounds how long a stop takes to be noticed when no frames come


class DetectStage:
    def __init__(
        self,
        camera_id: str,
        detector: Detector,
        frames: Handoff[Frame],
        results: Handoff[Inference],
        stop: threading.Event,
    ) -> None:
        self.camera_id = camera_id
        self._detector = detector
        self._frames = frames
        self._results = results
        self._stop = stop
        self.name = f"detect:{camera_id}"
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.frames_done = 0
        self.last_inference_ms = 0.0
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, deadline: float | None = None) -> None:
        self._stop.set()  # the shared stop event: this stage drains what it holds, then ends

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        structlog.contextvars.bind_contextvars(camera_id=self.camera_id)
        try:
            while True:
                # Drain after a stop as well: frames already captured are inspected, not thrown away.
                frame = self._frames.get(_GET_TIMEOUT_S)
                if frame is END_OF_STREAM:
                    break
                if frame is None:
                    continue
                detections, elapsed_ms = self._detector.infer(frame.image)
                self.frames_done += 1
                self.last_inference_ms = elapsed_ms
                self._results.put(Inference(frame, detections, elapsed_ms))
        except Exception as exc:
            self.error = exc
            log.exception("detector_crashed")
            self._stop.set()  # a blind inspection must not look healthy: bring the daemon down
        finally:
            self._results.close()
