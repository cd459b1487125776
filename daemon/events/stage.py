"""The event stage: turns inferences with detections into defect events and commits them to the outbox.

This is where rules live (today: "any detection at or above the confidence threshold is a defect"; tracking,
ROI and debounce slot in here). Committing to the durable outbox happens on this thread, before MQTT ever
sees the event, so a crash after this point loses nothing.
"""

from __future__ import annotations

import threading
import time
import uuid

from daemon.events.schema import defect_topic, render_defect
from daemon.frames import DefectEvent, Inference, ModelInfo, utc_now
from daemon.handoff import Handoff, consume
from daemon.lifecycle import CameraStage
from daemon.logs import get_logger
from daemon.metrics import Metrics
from daemon.outbox import Outbox, OutboxFullError, OutboxRetryableError, PayloadTooLargeError

log = get_logger("linewatch.events")

_RETRY_S = 1.0  # a locked or failing database is retried: the operator may fix it


class EventStage(CameraStage):
    kind = "events"

    def __init__(
        self,
        camera_id: str,
        model: ModelInfo,
        topic_prefix: str,
        results: Handoff[Inference],
        outbox: Outbox,
        stop: threading.Event,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(camera_id, stop)
        self._model = model
        self._topic = defect_topic(topic_prefix, camera_id)
        self._results = results
        self._outbox = outbox
        self._metrics = metrics or Metrics()
        self._committed = self._metrics.events_committed.labels(camera_id)
        self._latency = self._metrics.capture_to_commit_seconds.labels(camera_id)

    def run(self) -> None:
        consume(self._results, self._apply_rules)

    def _apply_rules(self, result: Inference) -> None:
        if result.detections:
            with self.progress.busy():
                self._commit(self._to_event(result))

    def _lose(self, event: DefectEvent, reason: str, detail: str) -> None:
        self._metrics.events_lost.labels(self.camera_id, reason).inc()
        log.critical("event_lost", reason=reason, detail=detail, event_id=event.event_id, frame_seq=event.frame_seq)

    def _to_event(self, result: Inference) -> DefectEvent:
        frame = result.frame
        return DefectEvent(
            event_id=str(uuid.uuid4()),
            camera_id=self.camera_id,
            frame_seq=frame.seq,
            captured_utc=frame.captured_utc,
            captured_mono=frame.captured_mono,
            width=frame.width,
            height=frame.height,
            model=self._model,
            detections=result.detections,
            inference_ms=result.inference_ms,
        )

    def _commit(self, event: DefectEvent) -> None:
        def render(seq: int) -> bytes:
            total_ms = (time.monotonic() - event.captured_mono) * 1000.0
            return render_defect(event, seq, utc_now(), total_ms)

        while True:
            try:
                stored = self._outbox.append(self.camera_id, event.event_id, self._topic, render)
                break
            except PayloadTooLargeError as exc:
                # Larger than the whole outbox bound: it can never be stored. Loud, counted, never silent.
                self._lose(event, "too_large", str(exc))
                return
            except OutboxFullError as exc:
                # The outbox already dropped every older event to make room (each drop counted as a seq gap) and
                # the filesystem still has no space for this one. Holding it would stall inspection for a disk
                # nobody may free; count it and go on, and /readyz says the outbox is not accepting.
                self._lose(event, "disk_full", str(exc))
                return
            except OutboxRetryableError as exc:
                # Locked by another process, or an I/O error: keep the event in hand and retry. The progress
                # record shows this stage as stuck, so /healthz and the systemd watchdog report a wedged
                # pipeline while it lasts. Giving up would be the silent loss we promise never to do.
                log.error("outbox_write_failed", error=str(exc), event_id=event.event_id)
                if self._stop.wait(_RETRY_S):
                    # Shutting down with a broken disk: we cannot hold the process forever. Say so loudly.
                    self._lose(event, "unwritable_at_shutdown", str(exc))
                    return
            # Any other OutboxError (a corrupt database) propagates: the stage fails as a bug (exit 1).
        self._committed.inc()
        self._latency.observe(max(0.0, time.monotonic() - event.captured_mono))
        log.info("defect_event", seq=stored.seq, event_id=event.event_id, frame_seq=event.frame_seq,
                 detections=len(event.detections), labels=sorted({d.label for d in event.detections}))
