"""The event stage: applies the rules, tracks defects across frames and commits events to the outbox.

Two modes (LINEWATCH_EVENTS__MODE):
- `defects` (default): one `new` event when a physical defect is confirmed and one `end` when its track is gone
  (schema linewatch.defect/3), from one ByteTrack per camera (tracking.py, bytetrack.py);
- `frames`: one event per inspected frame with detections (schema linewatch.frame_defects/1), for raw detections.

Either way the rules (rules.py) drop detections first, counted by reason. Committing to the durable outbox
happens on this thread, before MQTT ever sees the event, so a crash after this point loses nothing.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from daemon.events.commit import Committer
from daemon.events.job_stage import JobStage
from daemon.events.jobs import Look
from daemon.events.rules import Rules
from daemon.events.schema import render_defect, render_frame_defects
from daemon.events.snapshots import SnapshotStage
from daemon.events.tracking import DefectTracker, DefectView
from daemon.frames import DefectEvent, EndReason, Frame, Inference, ModelInfo, utc_now
from daemon.handoff import Handoff, consume
from daemon.lifecycle import CameraStage
from daemon.logs import get_logger
from daemon.metrics import Metrics
from daemon.outbox import Outbox
from daemon.payloads import CURRENT, Release
from daemon.settings.events import EventsSettings

log = get_logger("linewatch.events")

_LATENCIES = 512  # inference times kept for the stats' percentiles
_AGES = 2048  # frame ages kept for the stats' percentiles
_FIGURES_EVERY_S = 0.5  # how often the stage republishes its own figures for the stats


@dataclass(frozen=True, slots=True)
class Percentiles:
    """The stats' one percentile set, in ms (None before the first frame)."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None

    @classmethod
    def of(cls, values: collections.deque[float]) -> Percentiles:
        if not values:
            return cls()
        p50, p95, p99 = (round(float(v), 1) for v in np.percentile(np.array(values, dtype=np.float64), (50, 95, 99)))
        return cls(p50, p95, p99)

    def as_dict(self) -> dict[str, float | None]:
        return {"p50": self.p50, "p95": self.p95, "p99": self.p99}


@dataclass(frozen=True, slots=True)
class StageFigures:
    """The figures only the event stage's thread can know, as it last published them for the stats topic: the
    publisher's thread reads this snapshot (one reference), never the tracker or the stage's queues."""

    tracks_open: int = 0
    inference_ms: Percentiles = Percentiles()
    frame_age_ms: Percentiles = Percentiles()


class EventStage(CameraStage):
    kind = "events"

    def __init__(
        self,
        camera_id: str,
        model: ModelInfo,
        results: Handoff[Inference],
        outbox: Outbox,
        stop: threading.Event,
        metrics: Metrics | None = None,
        *,
        events: EventsSettings | None = None,
        rules: Rules | None = None,
        snapshots: SnapshotStage | None = None,
        stream_end: Callable[[], EndReason] = lambda: EndReason.SHUTDOWN,
        live: bool = True,
        jobs: JobStage | None = None,
        motion_px: float = 0.0,
        release: Release = CURRENT,
    ) -> None:
        super().__init__(camera_id, stop)
        self._model = model
        self._results = results
        self._outbox = outbox
        self._metrics = metrics or Metrics()
        self._settings = events or EventsSettings()  # type: ignore[call-arg]
        self._rules = rules
        self._snapshots = snapshots
        self._stream_end = stream_end  # why the frames stopped, for the `end` of the tracks still open
        self._commit = Committer(camera_id, outbox, stop, self._metrics)
        self._tracks_open = self._metrics.tracks_open.labels(camera_id)
        self._live = live
        self._release = release  # the payloads' format (LINEWATCH_MQTT__PAYLOADS)
        self._jobs = jobs  # inspection jobs: every inspected frame goes on to them
        self._motion_px = motion_px  # the line's motion between two camera frames (CameraSettings.motion_px)
        self._tracker = None if self._settings.mode == "frames" else self._new_tracker()
        self._size = (0, 0)
        self._inference_ms: collections.deque[float] = collections.deque(maxlen=_LATENCIES)
        self._age_ms: collections.deque[float] = collections.deque(maxlen=_AGES)
        self._age_tap: collections.deque[float] | None = None  # tap_frame_ages
        self._stats_mark: tuple[float, float, float] | None = None
        self.figures = StageFigures()  # replaced whole by this stage's thread (_publish_figures)
        self._figures_due = 0.0

    def _new_tracker(self) -> DefectTracker:
        rules = self._rules
        return DefectTracker(
            confirm_hits=self._settings.confirm_hits, confirm_window=self._settings.confirm_window,
            lost_frames=self._settings.track_lost_frames,
            min_track_frames=lambda class_id: rules.limits(class_id).min_track_frames if rules else 1,
            live=self._live, motion_px=self._motion_px)

    def run(self) -> None:
        try:
            consume(self._results, self._handle)
            if self._tracker is not None:
                for defect in self._tracker.close(self._stream_end()):
                    self._commit_defect(defect, None)
            self._publish_figures()
        finally:
            if self._jobs is not None:
                self._jobs.close_inbox()  # the open jobs get their answer; the job stage then closes the snapshots
            elif self._snapshots is not None:
                self._snapshots.jobs.close()  # the encoder drains what it holds, then ends

    def _handle(self, result: Inference) -> None:
        frame = result.frame
        if self._tracker is not None and self._size not in ((0, 0), (frame.width, frame.height)):
            # The camera came back at another resolution: boxes of the old size cannot be matched with new ones.
            for defect in self._tracker.close(EndReason.RESOLUTION_CHANGE):
                self._commit_defect(defect, None)  # rendered with the old size, which their boxes are in
            self._tracker = self._new_tracker()
        self._size = (frame.width, frame.height)
        self._inference_ms.append(result.inference_ms)
        rules = self._rules
        kept = result.detections if rules is None else tuple(d for d in result.detections if self._allowed(d, frame))
        with self.progress.busy():
            if self._tracker is None:
                # frames mode: a frame's event lists its strong detections, as before tracking existed
                strong = kept if rules is None else tuple(d for d in kept if self._strong(d))
                if strong:
                    self._commit_frame(result, strong)
            else:
                is_strong = rules.strong if rules is not None else (lambda d: True)
                for defect in self._tracker.update(frame, kept, result.inference_ms, is_strong):
                    self._commit_defect(defect, frame)
                self._tracks_open.set(self._tracker.open_tracks)
        # Capture to commit: by now whatever this frame makes is in the outbox (or nothing was to be made).
        now = time.monotonic()
        age_ms = (now - frame.captured_mono) * 1000.0
        self._age_ms.append(age_ms)
        if (tap := self._age_tap) is not None:
            tap.append(age_ms)
        if now >= self._figures_due:
            self._figures_due = now + _FIGURES_EVERY_S
            self._publish_figures()
        if self._jobs is not None:  # the jobs weigh confidences themselves (LINEWATCH_JOBS__MIN_CONFIDENCE)
            self._jobs.look(Look(frame.seq, frame.captured_mono, frame.captured_utc, time.monotonic(), frame.width,
                                 frame.height, kept, frame.image if kept else None))  # a picture only for an ng

    def _strong(self, detection: Any) -> bool:
        assert self._rules is not None
        if self._rules.strong(detection):
            return True
        self._metrics.detections_filtered.labels(self.camera_id, "confidence").inc()
        return False

    def _allowed(self, detection: Any, frame: Frame) -> bool:
        assert self._rules is not None
        reason = self._rules.refuse(detection, frame.width, frame.height)
        if reason is not None:
            self._metrics.detections_filtered.labels(self.camera_id, reason).inc()
        return reason is None

    # -- committing ---------------------------------------------------------------------------------------
    def _commit_frame(self, result: Inference, detections: tuple[Any, ...]) -> None:
        frame = result.frame
        event = DefectEvent(str(uuid.uuid4()), self.camera_id, frame.seq, frame.captured_utc, frame.captured_mono,
                            frame.width, frame.height, self._model, detections, result.inference_ms)

        def render(seq: int) -> bytes:
            return render_frame_defects(event, seq, utc_now(), (time.monotonic() - event.captured_mono) * 1000.0,
                                        self._release)

        stored = self._commit.store(event.event_id, frame.seq, frame.captured_mono, render)
        if stored is not None:
            log.info("defect_event", seq=stored.seq, event_id=event.event_id, frame_seq=frame.seq,
                     detections=len(detections), labels=sorted({d.label for d in detections}))

    def _commit_defect(self, defect: DefectView, frame: Frame | None) -> None:
        if defect.kind == "end" and not self._settings.end_events:
            return
        snapshot, job = None, None
        best = defect.best
        if defect.kind == "new" and self._snapshots is not None and best.image is not None:
            snapshot, job = self._snapshots.plan(best.image, best.bbox, f"{best.label} {best.confidence:.2f}")
        event_id = str(uuid.uuid4())
        since = frame.captured_mono if frame is not None else defect.last.captured_mono
        width, height = self._size

        def render(seq: int) -> bytes:
            return render_defect(defect, event_id=event_id, camera_id=self.camera_id, model=self._model,
                                 width=width, height=height, seq=seq, committed_at=utc_now(),
                                 total_ms=(time.monotonic() - since) * 1000.0, snapshot=snapshot,
                                 release=self._release)

        stored = self._commit.store(event_id, best.frame_seq, since, render)
        if stored is not None:
            if job is not None and self._snapshots is not None:
                self._snapshots.submit(job)
            self._metrics.defects.labels(self.camera_id, defect.kind).inc()
            log.info("defect_event", type=defect.kind, seq=stored.seq, event_id=event_id,
                     defect_id=defect.defect_id, track_id=defect.track_id, label=best.label,
                     confidence=best.confidence, frame_seq=best.frame_seq, frames_seen=defect.frames_seen,
                     snapshot=snapshot["id"] if snapshot else None)

    # -- stats (the publisher's thread reads `figures`) -------------------------------------------------------
    def tap_frame_ages(self, maxlen: int = 1 << 16) -> collections.deque[float]:
        """From now on, every frame's capture-to-commit age (ms) also goes into the deque returned, which another
        thread drains with popleft (bench/cameras.py): a deque's append and popleft are atomic, so no age is lost or
        read twice, and this stage's own figures are never touched from outside."""
        tap: collections.deque[float] = collections.deque(maxlen=maxlen)
        self._age_tap = tap
        return tap

    def _publish_figures(self) -> None:
        """On this stage's thread: the snapshot the stats read (percentiles over the last frames, open tracks)."""
        self.figures = StageFigures(self._tracker.open_tracks if self._tracker is not None else 0,
                                    Percentiles.of(self._inference_ms), Percentiles.of(self._age_ms))

    def stats(self) -> dict[str, Any]:
        """The figures of `{prefix}/{camera}/stats` (on the publisher's thread): the stage's last published
        snapshot, the metrics' counters and the outbox's depth; rates over the time since the previous call."""
        value, cam = self._metrics.value, {"camera": self.camera_id}
        now = time.monotonic()
        read, inspected = value("linewatch_frames_read_total", **cam), value("linewatch_frames_inspected_total", **cam)
        previous, self._stats_mark = self._stats_mark, (now, read, inspected)
        elapsed = now - previous[0] if previous else 0.0
        figures = self.figures
        depth = self._outbox.stats()
        return {
            "fps_in": round((read - previous[1]) / elapsed, 2) if previous and elapsed > 0 else None,
            "fps_out": round((inspected - previous[2]) / elapsed, 2) if previous and elapsed > 0 else None,
            "frames_read": int(read),
            "frames_inspected": int(inspected),
            "frames_dropped": int(value("linewatch_frames_dropped_total", **cam)),
            "inference_ms": figures.inference_ms.as_dict(),
            "frame_age_ms": figures.frame_age_ms.as_dict(),
            "tracks_open": figures.tracks_open,
            "events": {"new": int(value("linewatch_defects_total", camera=self.camera_id, type="new")),
                       "end": int(value("linewatch_defects_total", camera=self.camera_id, type="end")),
                       "committed": int(value("linewatch_events_committed_total", **cam))},
            "outbox": {"events": depth.pending_events, "bytes": depth.pending_bytes,
                       "snapshots": depth.other_kinds.get("snapshot", (0, 0))[0]},
        }
