"""Committing to the durable outbox from a stage's thread: retried while the disk is locked or failing, and a loss
(too large, a full disk, a broken disk at the stop) counted and logged, never silent. The event stage commits defect
events through it, the job stage verdicts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from daemon.logs import get_logger
from daemon.metrics import Metrics
from daemon.outbox import DEFECT, Outbox, OutboxFullError, OutboxRetryableError, PayloadTooLargeError, StoredEvent

log = get_logger("linewatch.events")

RETRY_S = 1.0  # a locked or failing database is retried: the operator may fix it


class Committer:
    def __init__(self, camera_id: str, outbox: Outbox, stop: threading.Event, metrics: Metrics, *,
                 kind: str = DEFECT) -> None:
        self.camera_id = camera_id
        self._outbox = outbox
        self._stop = stop
        self._metrics = metrics
        self._kind = kind
        # Defect events' figures; verdicts have their own (job_stage.py)
        self._committed = metrics.events_committed.labels(camera_id) if kind == DEFECT else None
        self._latency = metrics.capture_to_commit_seconds.labels(camera_id) if kind == DEFECT else None

    def lose(self, event_id: str, frame_seq: int, reason: str, detail: str) -> None:
        self._metrics.events_lost.labels(self.camera_id, reason).inc()
        log.critical("event_lost", reason=reason, detail=detail, event_id=event_id, frame_seq=frame_seq,
                     kind=self._kind)

    def store(self, event_id: str, frame_seq: int, captured_mono: float,
              render: Callable[[int], bytes]) -> StoredEvent | None:
        """Append render(seq) to the outbox; None when it could not be stored (counted and logged as lost)."""
        while True:
            try:
                stored = self._outbox.append(self.camera_id, event_id, render, kind=self._kind)
                break
            except PayloadTooLargeError as exc:
                # Larger than the whole outbox bound: it can never be stored. Loud, counted, never silent.
                self.lose(event_id, frame_seq, "too_large", str(exc))
                return None
            except OutboxFullError as exc:
                # The outbox already dropped every older event to make room (each drop counted as a seq gap) and
                # the filesystem still has no space for this one. Holding it would stall inspection for a disk
                # nobody may free; count it and go on, and /readyz says the outbox is not accepting.
                self.lose(event_id, frame_seq, "disk_full", str(exc))
                return None
            except OutboxRetryableError as exc:
                # Locked by another process, or an I/O error: keep the event in hand and retry. The stage's progress
                # record shows it as stuck, so /healthz and the systemd watchdog report a wedged pipeline while it
                # lasts. Giving up would be the silent loss we promise never to do.
                log.error("outbox_write_failed", error=str(exc), event_id=event_id, kind=self._kind)
                if self._stop.wait(RETRY_S):
                    # Shutting down with a broken disk: we cannot hold the process forever. Say so loudly.
                    self.lose(event_id, frame_seq, "unwritable_at_shutdown", str(exc))
                    return None
            # Any other OutboxError (a corrupt database) propagates: the stage fails as a bug (exit 1).
        if self._committed is not None and self._latency is not None:
            self._committed.inc()
            self._latency.observe(max(0.0, time.monotonic() - captured_mono))
        return stored
