"""Snapshots: a JPEG of the best view of a defect (the whole frame with its box drawn, and/or a crop), stored
in the outbox as their own kind and published as binary JPEG.

Encoding runs on this stage's own thread (`snapshots:cam1`), fed by a bounded `latest` hand-off: the event
stage never waits for a picture, and when the encoder falls behind the oldest job is dropped and counted
(`linewatch_snapshots_total{outcome="skipped"}`). Encoding happens before the outbox transaction; the outbox
bounds pictures by their own byte limit and drops them before any defect event.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2

from daemon.frames import BBox, Image
from daemon.handoff import DropPolicy, Handoff, consume
from daemon.lifecycle import CameraStage
from daemon.logs import get_logger
from daemon.metrics import Metrics
from daemon.outbox import Outbox, OutboxRetryableError, PayloadTooLargeError
from daemon.settings.events import SnapshotSettings
from daemon.topics import snapshot_topic

log = get_logger("linewatch.snapshots")

SNAPSHOT = "snapshot"  # the outbox kind
_JOBS = 8  # pictures waiting for the encoder; more means it cannot keep up, and the oldest go
_GREEN = (0, 200, 0)


@dataclass(frozen=True, slots=True)
class SnapshotJob:
    snapshot_id: str
    image: Image
    bbox: BBox
    caption: str


def _constant(data: bytes) -> Callable[[int], bytes]:
    return lambda seq: data


def _crop_box(bbox: BBox, width: int, height: int, margin: float) -> tuple[int, int, int, int]:
    dx, dy = (bbox.x2 - bbox.x1) * margin, (bbox.y2 - bbox.y1) * margin
    x1, y1 = max(0, int(bbox.x1 - dx)), max(0, int(bbox.y1 - dy))
    x2, y2 = min(width, int(bbox.x2 + dx + 0.999)), min(height, int(bbox.y2 + dy + 0.999))
    return x1, y1, max(x1 + 1, x2), max(y1 + 1, y2)


class SnapshotStage(CameraStage):
    kind = "snapshots"

    def __init__(self, camera_id: str, settings: SnapshotSettings, topic_prefix: str, outbox: Outbox,
                 stop: threading.Event, metrics: Metrics) -> None:
        super().__init__(camera_id, stop)
        self._settings = settings
        self._prefix = topic_prefix
        self._outbox = outbox
        self._counter = metrics.snapshots
        self.jobs: Handoff[SnapshotJob] = Handoff(
            f"snapshots:{camera_id}", _JOBS, DropPolicy.LATEST, stop,
            on_drop=metrics.snapshots.labels(camera_id, "skipped").inc)
        self.views = ("frame", "crop") if settings.mode == "both" else (settings.mode,)

    def plan(self, image: Image, bbox: BBox, caption: str) -> tuple[dict[str, Any], SnapshotJob]:
        """The reference an event carries (id, topics, sizes) and the job that makes its pictures. Submit the
        job once the event is stored, so the pictures follow their event and never come without one."""
        snapshot_id = str(uuid.uuid4())
        height, width = image.shape[:2]
        reference: dict[str, Any] = {"id": snapshot_id}
        for view in self.views:
            w, h = self._size(view, bbox, width, height)
            reference[view] = {"topic": snapshot_topic(self._prefix, self.camera_id, snapshot_id, view),
                               "width": w, "height": h}
        return reference, SnapshotJob(snapshot_id, image, bbox, caption)

    def submit(self, job: SnapshotJob) -> None:
        """Never blocks: when the encoder is behind, the oldest job goes (counted as skipped)."""
        self.jobs.put(job)

    def _size(self, view: str, bbox: BBox, width: int, height: int) -> tuple[int, int]:
        if view == "crop":
            x1, y1, x2, y2 = _crop_box(bbox, width, height, self._settings.crop_margin)
            return x2 - x1, y2 - y1
        scale = min(1.0, self._settings.max_width / width)
        return max(1, round(width * scale)), max(1, round(height * scale))

    def run(self) -> None:
        consume(self.jobs, self._store)

    def _store(self, job: SnapshotJob) -> None:
        with self.progress.busy():
            for view in self.views:
                jpeg = self._encode(view, job)
                try:  # the view joins the id: MQTT makes the topic of both (daemon/topics.py event_topic)
                    self._outbox.append(self.camera_id, f"{job.snapshot_id}/{view}", _constant(jpeg), kind=SNAPSHOT)
                    self._counter.labels(self.camera_id, "stored").inc()
                except (PayloadTooLargeError, OutboxRetryableError) as exc:
                    outcome = "too_large" if isinstance(exc, PayloadTooLargeError) else "disk_full"
                    self._counter.labels(self.camera_id, outcome).inc()
                    log.warning("snapshot_not_stored", snapshot_id=job.snapshot_id, view=view, outcome=outcome,
                                error=str(exc))

    def _encode(self, view: str, job: SnapshotJob) -> bytes:
        height, width = job.image.shape[:2]
        if view == "crop":
            x1, y1, x2, y2 = _crop_box(job.bbox, width, height, self._settings.crop_margin)
            picture = job.image[y1:y2, x1:x2]
        else:
            picture = job.image.copy()
            box = job.bbox
            cv2.rectangle(picture, (int(box.x1), int(box.y1)), (int(box.x2), int(box.y2)), _GREEN, 2)
            # Hershey fonts are compiled into OpenCV: nothing is downloaded.
            cv2.putText(picture, job.caption, (int(box.x1), max(12, int(box.y1) - 6)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.5, _GREEN, 1, cv2.LINE_AA)
            w, h = self._size(view, job.bbox, width, height)
            if (w, h) != (width, height):
                picture = cv2.resize(picture, (w, h), interpolation=cv2.INTER_AREA).astype("uint8")
        ok, encoded = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, self._settings.quality])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode a {view} snapshot")
        return bytes(encoded)
