"""The composition root: build every stage from the settings, start them in order, stop them in reverse.

    capture ──Handoff[Frame]──► detect ──Handoff[Inference]──► events ──Outbox (SQLite)──► MQTT publisher

Start order is publisher → events → detect → capture, so nothing is produced before its consumer runs.
Stop order is the reverse: the capture stops reading, each stage drains what it holds and closes its
hand-off, and the publisher delivers what is left in the outbox until the shutdown deadline.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from daemon.backoff import Backoff
from daemon.detect.model import Detector
from daemon.detect.stage import DetectStage
from daemon.events.stage import EventStage
from daemon.exitcodes import ExitCode
from daemon.frames import Frame, Inference, utc_now
from daemon.handoff import DropPolicy, Handoff
from daemon.lifecycle import Stage, start_in_order, stop_in_reverse
from daemon.logs import get_logger
from daemon.ops.sdnotify import sd_notify, watchdog_interval_s
from daemon.ops.watchdog import CaptureWatchdog
from daemon.publish.mqtt import MqttPublisher
from daemon.publish.outbox import Outbox, OutboxLimits
from daemon.settings import Settings
from daemon.sources.capture import CameraState, CameraStatus, CaptureStage
from daemon.sources.factory import build_source

log = get_logger("linewatch.app")

LIVE_HANDOFF_CAPACITY = 2  # a live camera: only the freshest frames matter; older ones are dropped, counted
FILE_HANDOFF_CAPACITY = 8  # files and offline runs: a little read-ahead, the reader waits when full
RESULTS_CAPACITY = 64  # detector → events: events are cheap; a stall here means the disk is failing
OUTBOX_FILE = "outbox.sqlite3"
_MAIN_TICK_S = 0.5


def frame_policy(settings: Settings) -> DropPolicy:
    if settings.camera.handoff != "auto":
        return DropPolicy(settings.camera.handoff)
    return DropPolicy.LATEST if settings.camera.is_live else DropPolicy.WAIT


def open_outbox(settings: Settings) -> Outbox:
    limits = OutboxLimits(
        max_bytes=int(settings.outbox.max_mb * 1024 * 1024), max_age_s=settings.outbox.max_age_h * 3600.0
    )
    return Outbox(Path(settings.outbox.dir) / OUTBOX_FILE, limits, synchronous=settings.outbox.sync.upper())  # type: ignore[arg-type]


class App:
    def __init__(self, settings: Settings, stop: threading.Event, detector: Detector, outbox: Outbox) -> None:
        self.settings = settings
        self.stop = stop
        camera = settings.camera
        self.camera_id = camera.camera_id
        policy = frame_policy(settings)
        capacity = LIVE_HANDOFF_CAPACITY if policy is DropPolicy.LATEST else FILE_HANDOFF_CAPACITY
        self.frames: Handoff[Frame] = Handoff(f"frames:{self.camera_id}", capacity, policy, stop)
        self.results: Handoff[Inference] = Handoff(f"results:{self.camera_id}", RESULTS_CAPACITY,
                                                   DropPolicy.WAIT, stop)
        self.detector = detector
        self.outbox = outbox
        self.publisher = MqttPublisher(
            settings.mqtt, settings.mqtt_client_id, self.camera_id, detector.info, outbox, stop
        )
        self.events = EventStage(self.camera_id, detector.info, settings.mqtt.topic_prefix, self.results,
                                 outbox, stop)
        self.detect = DetectStage(self.camera_id, detector, self.frames, self.results, stop)
        self.capture = CaptureStage(
            self.camera_id,
            build_source(camera),
            self.frames,
            stop,
            backoff=Backoff(camera.backoff_initial_s, camera.backoff_max_s),
            stall_timeout_s=self.stall_timeout_s,
            on_status=self.publisher.set_camera_status,
        )
        self.watchdog = CaptureWatchdog(
            self.capture, limit_s=max(camera.open_timeout_s, camera.read_timeout_s) + self.stall_timeout_s
        )

    @property
    def stages(self) -> tuple[Stage, ...]:
        """In start order: consumers first."""
        return (self.publisher, self.events, self.detect, self.capture)

    @property
    def stall_timeout_s(self) -> float:
        camera = self.settings.camera
        if camera.stall_timeout_s:
            return camera.stall_timeout_s
        return max(5.0, 10.0 / camera.fps) if camera.fps else 5.0

    def run(self) -> ExitCode:
        """Start, supervise until stop or end of stream, then shut down in order. Returns the exit code."""
        start_in_order(self.stages)
        log.info("daemon_ready", camera_id=self.camera_id, policy=self.frames.policy.value,
                 model=self.detector.info.name, device=self.detector.info.device, imgsz=self.detector.imgsz)
        sd_notify("READY=1")
        code = self._supervise()
        return self._shutdown(code)

    def _supervise(self) -> ExitCode:
        ping_every = watchdog_interval_s()
        next_ping = time.monotonic()
        while not self.stop.wait(_MAIN_TICK_S):
            if self.capture.finished.is_set():
                return ExitCode.CAMERA if self.capture.fatal else ExitCode.OK
            if self.detect.error or self.events.error:
                return ExitCode.INTERNAL
            stuck = self.watchdog.check()
            if stuck:
                self.publisher.set_camera_status(
                    CameraStatus(self.camera_id, CameraState.STALLED, stuck, utc_now())
                )
                return ExitCode.WATCHDOG
            if ping_every and time.monotonic() >= next_ping:
                # Only a supervised pipeline pings systemd; a hung main loop gets us restarted.
                sd_notify("WATCHDOG=1")
                next_ping = time.monotonic() + ping_every
        if self.capture.fatal:
            return ExitCode.CAMERA
        return ExitCode.INTERNAL if (self.detect.error or self.events.error) else ExitCode.OK

    def _shutdown(self, code: ExitCode) -> ExitCode:
        sd_notify("STOPPING=1")
        deadline = time.monotonic() + self.settings.pipeline.shutdown_timeout_s
        self.stop.set()
        log.info("shutdown_started", exit_code=int(code), deadline_s=self.settings.pipeline.shutdown_timeout_s)
        stuck = stop_in_reverse(self.stages, deadline)
        if stuck:
            # The process exits anyway (stage threads are daemonic); a capture stuck in native code dies with it.
            log.error("stages_did_not_stop", stages=stuck)
        stats = self.outbox.stats()
        log.info("shutdown_complete", exit_code=int(code), frames_read=self.capture.frames_read,
                 frames_dropped=self.frames.dropped_total, frames_inspected=self.detect.frames_done,
                 events=self.events.events_committed, published=self.publisher.metrics.published_total,
                 refused=self.publisher.metrics.refused_total, lost=self.events.events_lost,
                 outbox_pending=stats.pending_events, outbox_dropped_total=stats.dropped_total)
        self.outbox.close()
        return code
