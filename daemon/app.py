"""The composition root: build every stage from the settings, start them in order, stop them in reverse.

    capture ──Handoff[Frame]──► detect ──Handoff[Inference]──► events ──Outbox (SQLite)──► MQTT publisher

Start order is publisher → events → detect → capture, so nothing is produced before its consumer runs.
Stop order is the reverse: the capture stops reading, each stage drains what it holds and closes its
hand-off, and the publisher delivers what is left in the outbox until the shutdown deadline.

Every stage reports failure by kind (lifecycle.StageThread.fail); `exit_code_for` turns the first one into
the exit code. Health, metrics and sd_notify read the same stage state (ops/health.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from daemon.backoff import Backoff
from daemon.detect.model import Detector
from daemon.detect.stage import DetectStage
from daemon.events.rules import Rules
from daemon.events.schema import render_stats, stats_topic
from daemon.events.snapshots import SNAPSHOT, SnapshotStage
from daemon.events.stage import EventStage
from daemon.exitcodes import ExitCode, FailureKind, StageFailure, exit_code_for
from daemon.frames import CameraState, CameraStatus, Frame, Inference, utc_now
from daemon.handoff import DropPolicy, Handoff
from daemon.lifecycle import StageThread, start_in_order, stop_in_reverse
from daemon.logs import get_logger
from daemon.metrics import Metrics, OutboxDepth
from daemon.ops.health import Health
from daemon.ops.sdnotify import sd_notify, watchdog_interval_s
from daemon.ops.watchdog import StallWatchdog
from daemon.outbox import DropReport, Outbox, OutboxLimits, log_drop
from daemon.publish.mqtt import MqttPublisher
from daemon.settings import Settings
from daemon.sources.capture import CaptureStage
from daemon.sources.factory import build_source

log = get_logger("linewatch.app")

LIVE_HANDOFF_CAPACITY = 2  # a live camera: only the freshest frames matter; older ones are dropped, counted
FILE_HANDOFF_CAPACITY = 8  # files and offline runs: a little read-ahead, the reader waits when full
RESULTS_CAPACITY = 64  # detector → events: events are cheap; a stall here means the disk is failing
OUTBOX_FILE = "outbox.sqlite3"
_MAIN_TICK_S = 0.5
_STATUS_EVERY_S = 5.0


def frame_policy(settings: Settings) -> DropPolicy:
    if settings.camera.handoff != "auto":
        return DropPolicy(settings.camera.handoff)
    return DropPolicy.LATEST if settings.camera.is_live else DropPolicy.WAIT


def open_outbox(settings: Settings, on_drop: Callable[[DropReport], None] | None = None) -> Outbox:
    limits = OutboxLimits(
        max_bytes=int(settings.outbox.max_mb * 1024 * 1024), max_age_s=settings.outbox.max_age_h * 3600.0,
        kind_max_bytes={SNAPSHOT: int(settings.outbox.snapshot_max_mb * 1024 * 1024)},
    )
    return Outbox(Path(settings.outbox.dir) / OUTBOX_FILE, limits, synchronous=settings.outbox.sync.upper(),  # type: ignore[arg-type]
                  reserve_bytes=int(settings.outbox.reserve_mb * 1024 * 1024), on_drop=on_drop or log_drop)


def stall_timeout_s(settings: Settings) -> float:
    camera = settings.camera
    if camera.stall_timeout_s:
        return camera.stall_timeout_s
    return max(5.0, 10.0 / camera.fps) if camera.fps else 5.0


class App:
    def __init__(self, settings: Settings, stop: threading.Event, detector: Detector, outbox: Outbox, *,
                 metrics: Metrics, health: Health, fingerprint: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.stop = stop
        self.metrics = metrics
        self.health = health
        camera = settings.camera
        self.camera_id = camera.camera_id
        policy = frame_policy(settings)
        capacity = LIVE_HANDOFF_CAPACITY if policy is DropPolicy.LATEST else FILE_HANDOFF_CAPACITY
        self.frames: Handoff[Frame] = Handoff(f"frames:{self.camera_id}", capacity, policy, stop,
                                              on_drop=metrics.frames_dropped.labels(self.camera_id).inc)
        self.results: Handoff[Inference] = Handoff(f"results:{self.camera_id}", RESULTS_CAPACITY,
                                                   DropPolicy.WAIT, stop)
        self.detector = detector
        self.outbox = outbox
        metrics.observe_outbox(self._outbox_depth)
        prefix = settings.mqtt.topic_prefix
        self.snapshots = None if settings.snapshots.mode == "off" else SnapshotStage(
            self.camera_id, settings.snapshots, prefix, outbox, stop, metrics)
        self.events = EventStage(self.camera_id, detector.info, prefix, self.results, outbox, stop, metrics,
                                 events=settings.events, snapshots=self.snapshots,
                                 rules=Rules(settings.rules, detector.info.classes, settings.model.confidence),
                                 stream_end=lambda: "end of stream" if self.capture.end_reason == "end of stream"
                                 else "shutdown", live=policy is DropPolicy.LATEST)
        interval = settings.events.stats_interval_s
        self.publisher = MqttPublisher(
            settings.mqtt, settings.mqtt_client_id, self.camera_id, detector.info, outbox, stop,
            metrics=metrics, fingerprint=fingerprint,
            stats=(stats_topic(prefix, self.camera_id), interval,
                   lambda: render_stats(self.camera_id, interval, self.events.stats())) if interval else None,
        )
        self.detect = DetectStage(self.camera_id, detector, self.frames, self.results, stop, metrics)
        stall_s = stall_timeout_s(settings)
        self.capture = CaptureStage(
            self.camera_id,
            build_source(camera),
            self.frames,
            stop,
            backoff=Backoff(camera.backoff_initial_s, camera.backoff_max_s),
            stall_timeout_s=stall_s,
            on_status=self.publisher.set_camera_status,
            metrics=metrics,
        )
        self.watchdog = StallWatchdog(self.capture, limit_s=max(camera.open_timeout_s, camera.read_timeout_s) + stall_s)
        wedge_s = settings.pipeline.wedge_timeout_s
        for stage in (self.publisher, *([self.snapshots] if self.snapshots else []), self.events, self.detect):
            health.watch_stage(stage, wedge_s)
        health.watch_stage(self.capture, self.watchdog.limit_s)
        health.watch_camera(self.capture)
        health.watch_delivery(lambda: self.publisher.connected, lambda: not outbox.disk_full)

    @property
    def stages(self) -> tuple[StageThread, ...]:
        """In start order: consumers first."""
        snapshots = (self.snapshots,) if self.snapshots is not None else ()
        return (self.publisher, *snapshots, self.events, self.detect, self.capture)

    def _outbox_depth(self) -> OutboxDepth:
        stats = self.outbox.stats()
        return OutboxDepth(stats.pending_events, stats.pending_bytes, stats.oldest_age_s)

    def run(self, on_tick: Callable[[], None] = lambda: None) -> ExitCode:
        """Start, supervise until stop or end of stream, then shut down in order. Returns the exit code.

        `on_tick` runs on the main thread every tick (the CLI logs the signals that arrived)."""
        start_in_order(self.stages)
        log.info("daemon_ready", camera_id=self.camera_id, policy=self.frames.policy.value,
                 model=self.detector.info.name, device=self.detector.info.device, imgsz=self.detector.imgsz)
        sd_notify("READY=1")
        self._supervise(on_tick)
        on_tick()
        return self._shutdown(exit_code_for(self._failures()))

    def _failures(self) -> list[StageFailure]:
        return [stage.failure for stage in self.stages if stage.failure is not None]

    def _supervise(self, on_tick: Callable[[], None]) -> None:
        """Until the stop event (a signal, a stage that failed) or the end of a finite source."""
        ping_every = watchdog_interval_s()
        next_ping = next_status = time.monotonic()
        while not self.stop.wait(_MAIN_TICK_S):
            on_tick()
            if self.capture.finished.is_set():
                return
            stuck = self.watchdog.check()
            if stuck:
                # The capture thread cannot report this itself: it is the one stuck.
                self.publisher.set_camera_status(
                    CameraStatus(self.camera_id, CameraState.STALLED, stuck, utc_now())
                )
                self.capture.fail(FailureKind.STALLED, stuck)
                return
            now = time.monotonic()
            self.health.readiness(now)  # every tick, so linewatch_ready and linewatch_healthy stay current
            live_ok = self.health.last_liveness.ok  # computed by readiness() just now
            if now >= next_status:
                sd_notify(f"STATUS={self.health.status_line(now)}")
                next_status = now + _STATUS_EVERY_S
            if ping_every and now >= next_ping and live_ok:
                # Only a live pipeline pings systemd: a wedged stage or a hung main loop gets us restarted.
                sd_notify("WATCHDOG=1")
                next_ping = now + ping_every

    def _shutdown(self, code: ExitCode) -> ExitCode:
        sd_notify("STOPPING=1")
        deadline = time.monotonic() + self.settings.pipeline.shutdown_timeout_s
        self.stop.set()
        log.info("shutdown_started", exit_code=int(code), deadline_s=self.settings.pipeline.shutdown_timeout_s)
        stuck = stop_in_reverse(self.stages, deadline)
        if stuck:
            # The process exits anyway (stage threads are daemonic); a capture stuck in native code dies with it.
            log.error("stages_did_not_stop", stages=stuck)
        code = exit_code_for(self._failures())  # a stage may have failed while draining
        stats = self.outbox.stats()
        value, cam = self.metrics.value, {"camera": self.camera_id}
        log.info("shutdown_complete", exit_code=int(code),
                 frames_read=int(value("linewatch_frames_read_total", **cam)),
                 frames_dropped=int(value("linewatch_frames_dropped_total", **cam)),
                 frames_inspected=int(value("linewatch_frames_inspected_total", **cam)),
                 events=int(value("linewatch_events_committed_total", **cam)),
                 published=int(value("linewatch_events_published_total")),
                 refused=int(value("linewatch_events_refused_total")),
                 lost=int(self.metrics.total("linewatch_events_lost_total")),
                 inferences_lost=int(self.metrics.total("linewatch_inferences_lost_total")),
                 defects_new=int(value("linewatch_defects_total", camera=self.camera_id, type="new")),
                 defects_end=int(value("linewatch_defects_total", camera=self.camera_id, type="end")),
                 detections_filtered={reason: int(value("linewatch_detections_filtered_total", camera=self.camera_id,
                                                        reason=reason))
                                      for reason in ("ignored_class", "confidence", "area", "roi")},
                 outbox_pending=stats.pending_events, outbox_dropped_total=stats.dropped_total)
        self.outbox.close()
        return code
