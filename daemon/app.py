"""The composition root: build every stage from the settings, start them in order, stop them in reverse.

    camera 1: capture ──frames──┐                          ┌──results──► events ──┐
    camera 2: capture ──frames──┼──► detect (one thread, ──┼──results──► events ──┼──► Outbox (SQLite) ──► MQTT
    camera N: capture ──frames──┘    batched inference)    └──results──► events ──┘       publisher (one)

Each camera is a CameraPipeline (pipeline.py); one detector thread owns the model and serves them all; one
publisher owns the MQTT connection. Start order is publisher → events → detect → captures, so nothing is
produced before its consumer runs. Stop order is the reverse: the captures stop reading, each stage drains
what it holds and closes its hand-off, and the publisher delivers what is left until the shutdown deadline.

Every stage reports failure by kind (lifecycle.StageThread.fail); `exit_code_for` turns the first one into
the exit code. A camera's own failure (a wiring error, a crash in its capture) is isolated: it is reported on
its status topic and the others go on; only when no camera is usable does the daemon stop with that failure's
code. A capture stuck in a native call still ends the process (exit 5, see ops/watchdog.py): Python cannot
free a thread blocked in C. Health, metrics and sd_notify read the same stage state (ops/health.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from daemon.detect.model import Detector
from daemon.detect.stage import DetectStage, frames_per_pass
from daemon.events.job_stage import VERDICT, JobStage, TriggerRefused
from daemon.events.jobs import part_id_from_message
from daemon.events.rules import Rules
from daemon.events.snapshots import SNAPSHOT
from daemon.exitcodes import ExitCode, FailureKind, StageFailure, deciding_camera_failures, exit_code_for
from daemon.files import read_secret
from daemon.frames import CameraState, CameraStatus, rfc3339, utc_now
from daemon.handoff import Bell
from daemon.lifecycle import StageThread, start_in_order, stop_in_reverse
from daemon.logs import get_logger
from daemon.metrics import Metrics, OutboxDepth
from daemon.ops.detect_api import DetectApi
from daemon.ops.health import Health
from daemon.ops.sdnotify import sd_notify, watchdog_interval_s
from daemon.outbox import DropReport, Outbox, OutboxLimits
from daemon.pipeline import CameraPipeline, handoff_capacity
from daemon.plc.loop import PlcServerError
from daemon.plc.modbus import ModbusServer
from daemon.plc.opcua import OpcUaOptions, OpcUaServer
from daemon.publish.mqtt import MqttPublisher
from daemon.settings import Settings
from daemon.topics import trigger_topic

log = get_logger("linewatch.app")

OUTBOX_FILE = "outbox.sqlite3"
_MAIN_TICK_S = 0.5
_STATUS_EVERY_S = 5.0
_FILTER_REASONS = ("ignored_class", "confidence", "area", "roi")


def open_outbox(settings: Settings, on_drop: Callable[[DropReport], None] | None = None) -> Outbox:
    limits = OutboxLimits(
        max_bytes=int(settings.outbox.max_mb * 1024 * 1024), max_age_s=settings.outbox.max_age_h * 3600.0,
        kind_max_bytes={SNAPSHOT: int(settings.outbox.snapshot_max_mb * 1024 * 1024),
                        VERDICT: int(settings.outbox.verdict_max_mb * 1024 * 1024)},
    )
    return Outbox(Path(settings.outbox.dir) / OUTBOX_FILE, limits, synchronous=settings.outbox.sync.upper(),  # type: ignore[arg-type]
                  reserve_bytes=int(settings.outbox.reserve_mb * 1024 * 1024), on_drop=on_drop,
                  ack_grace_s=settings.mqtt.ack_grace_s)


def warm_up_batch(settings: Settings, streams: int) -> int:
    """The largest batch the detector will run: what one pass takes from every camera (a live camera's one frame, a
    file's read-ahead shared among the `streams`; a tiled camera's frame, its tiles warmed up apart), at most
    LINEWATCH_DETECT__MAX_BATCH."""
    taken = sum(frames_per_pass(handoff_capacity(c.camera), streams, tiled=c.camera.tiles is not None)
                for c in settings.camera_configs)
    return min(settings.detect.max_batch, taken)


def plc_servers(settings: Settings, jobs: list[JobStage], metrics: Metrics) -> list[ModbusServer | OpcUaServer]:
    """The PLC outputs asked for (none without cameras that have inspection jobs)."""
    servers: list[ModbusServer | OpcUaServer] = []
    if jobs and settings.modbus.enabled:
        servers.append(ModbusServer(settings.modbus.host, settings.modbus.port, jobs, metrics,
                                    fresh_s=settings.modbus.fresh_ms / 1000, buffer=settings.modbus.buffer))
    if jobs and settings.opcua.enabled:
        ua = settings.opcua
        password = read_secret(ua.password_file) if ua.password_file is not None else None
        servers.append(OpcUaServer(OpcUaOptions(ua.endpoint, ua.security, ua.certificate_file, ua.private_key_file,
                                                ua.username, password, ua.allows_anonymous), jobs, metrics))
    return servers


def _mqtt_trigger(stage: JobStage) -> Callable[[bytes], None]:
    def handle(payload: bytes) -> None:
        stage.trigger_message("mqtt", payload)
    return handle


class App:
    def __init__(self, settings: Settings, stop: threading.Event, detector: Detector, outbox: Outbox, *,
                 metrics: Metrics, health: Health, fingerprint: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.stop = stop
        self.metrics = metrics
        self.health = health
        self.detector = detector
        self.outbox = outbox
        metrics.observe_outbox(self._outbox_depth)
        self.publisher: MqttPublisher  # built below, after the cameras it reports; called only once started
        bell = Bell()  # every camera's frame hand-off rings it; the detector waits on it
        self.pipelines = [
            CameraPipeline(config, settings, detector.info, outbox, stop, metrics=metrics, bell=bell,
                           on_status=lambda status: self.publisher.set_camera_status(status),
                           prepare=detector.prepare)
            for config in settings.camera_configs
        ]
        self.jobs = {p.camera_id: p.jobs for p in self.pipelines if p.jobs is not None}
        prefix = settings.mqtt.topic_prefix
        self.publisher = MqttPublisher(
            settings.mqtt, settings.mqtt_client_id, [p.camera_id for p in self.pipelines], detector.info, outbox,
            stop, metrics=metrics, fingerprint=fingerprint,
            stats=[p.stats_feed for p in self.pipelines if p.stats_feed is not None],
            commands={trigger_topic(prefix, camera_id): _mqtt_trigger(stage) for camera_id, stage in self.jobs.items()})
        self.plcs = plc_servers(settings, list(self.jobs.values()), metrics)
        self.detect_api = self._detect_api(settings, detector, bell) if settings.http.detect else None
        lanes = [p.lane for p in self.pipelines] + ([self.detect_api.lane] if self.detect_api is not None else [])
        self.detect = DetectStage(detector, lanes, bell, stop, max_batch=warm_up_batch(settings, detector.streams),
                                  batch_wait_s=settings.detect.batch_wait_ms / 1000, metrics=metrics)
        for stage in self.jobs.values():  # a trigger is inspected only by a detector that runs
            stage.watch_model(lambda: self.detect.alive and self.detect.failure is None)
        wedge_s = settings.pipeline.wedge_timeout_s
        health.watch_stage(self.publisher, wedge_s)
        health.watch_stage(self.detect, wedge_s)
        for pipeline in self.pipelines:
            pipeline.capture.on_failure = self._camera_failed  # isolated: the other cameras go on
            health.watch_stage(pipeline.capture, pipeline.watchdog.limit_s, isolated=True)
            for consumer in pipeline.consumers:  # they end, drained, once their camera's frames have ended
                health.watch_stage(consumer, wedge_s, may_end=pipeline.capture.finished.is_set)
            health.watch_camera(pipeline.capture)
        health.watch_delivery(lambda: self.publisher.connected, lambda: not outbox.disk_full)

    def http_trigger(self, camera_id: str, body: bytes) -> tuple[int, dict[str, object]]:
        """POST /cameras/<id>/trigger (LINEWATCH_HTTP__TRIGGERS): 202 with the job's id, or why not."""
        stage = self.jobs.get(camera_id)
        if stage is None:
            return 404, {"error": f"no camera {camera_id!r} with inspection jobs (LINEWATCH_JOBS__ENABLED)"}
        try:
            part_id = part_id_from_message(body)
        except ValueError as exc:
            return 400, {"error": str(exc)[:200]}
        try:
            trigger = stage.trigger("http", part_id)
        except TriggerRefused as exc:
            return 503, {"error": str(exc)}
        return 202, {"camera_id": camera_id, "job_id": trigger.job_id, "part_id": trigger.part_id,
                     "triggered_at": rfc3339(trigger.at_utc)}

    def _detect_api(self, settings: Settings, detector: Detector, bell: Bell) -> DetectApi:
        """POST /detect's lane and answers: each camera's rules and tiling, by the id a request names."""
        http = settings.http
        return DetectApi(detector.info, {p.camera_id: (p.rules, p.tiler) for p in self.pipelines},
                         Rules(settings.rules, detector.info.classes, settings.model.confidence), detector.prepare,
                         bell, self.stop, queue=http.detect_queue,
                         token=read_secret(http.detect_token_file) if http.detect_token_file is not None else None)

    @property
    def stages(self) -> tuple[StageThread, ...]:
        """In start order: consumers first."""
        api = (self.detect_api,) if self.detect_api is not None else ()
        return (self.publisher, *(s for p in self.pipelines for s in p.consumers), *api, self.detect,
                *(p.capture for p in self.pipelines))

    def _camera_failed(self, failure: StageFailure) -> None:
        usable = [p.camera_id for p in self.pipelines if p.usable]
        log.error("camera_failed", stage=failure.stage, kind=failure.kind.value, reason=failure.reason,
                  cameras_usable=usable)
        if not usable:
            self.stop.set()  # no camera left: nothing to inspect

    def _outbox_depth(self) -> OutboxDepth:
        stats = self.outbox.stats()
        return OutboxDepth(stats.pending_events, stats.pending_bytes, stats.oldest_age_s, stats.dead_letters)

    def run(self, on_tick: Callable[[], None] = lambda: None) -> ExitCode:
        """Start, supervise until stop or end of stream, then shut down in order. Returns the exit code.

        `on_tick` runs on the main thread every tick (the CLI logs the signals that arrived)."""
        for plc in self.plcs:
            try:
                plc.start()  # before the stages: a PLC may connect while the cameras open
            except PlcServerError as exc:
                log.error("plc_unusable", error=str(exc), exit_code=int(ExitCode.BOOT))
                for started in self.plcs:
                    started.stop()
                return ExitCode.BOOT
        start_in_order(self.stages)
        log.info("daemon_ready", cameras={p.camera_id: p.policy.value for p in self.pipelines},
                 model=self.detector.info.name, device=self.detector.info.device, imgsz=self.detector.imgsz,
                 streams=self.detect.streams, threads=self.detector.threads, max_batch=self.detect.max_batch,
                 batch_wait_ms=self.settings.detect.batch_wait_ms)
        sd_notify("READY=1")
        self._supervise(on_tick)
        on_tick()
        return self._shutdown(exit_code_for(self._failures()))

    def _failures(self) -> list[StageFailure]:
        """The failures that decide the exit code: every stage's but the cameras' own, which count as
        `deciding_camera_failures` says (a stall; or, once no camera is usable, the last one)."""
        captures = {id(p.capture) for p in self.pipelines}
        shared = [s.failure for s in self.stages if s.failure is not None and id(s) not in captures]
        cameras = [p.capture.failure for p in self.pipelines if p.capture.failure is not None]
        return shared + deciding_camera_failures(cameras, any(p.usable for p in self.pipelines))

    def _supervise(self, on_tick: Callable[[], None]) -> None:
        """Until the stop event (a signal, a stage that failed) or the end of a finite source."""
        ping_every = watchdog_interval_s()
        next_ping = next_status = time.monotonic()
        unhealthy_since: float | None = None
        while not self.stop.wait(_MAIN_TICK_S):
            on_tick()
            self.outbox.flush_drop_log()  # the drop lines that waited out their second
            if all(p.capture.finished.is_set() for p in self.pipelines):
                return  # every camera ended (finite sources) or failed on its own
            for pipeline in self.pipelines:
                stuck = pipeline.watchdog.check()
                if stuck:
                    # The capture thread cannot report this itself: it is the one stuck. Python cannot free it,
                    # so the process exits 5 and is restarted (docs/cameras.md, Failure isolation).
                    self.publisher.set_camera_status(
                        CameraStatus(pipeline.camera_id, CameraState.STALLED, stuck, utc_now()))
                    pipeline.capture.fail(FailureKind.STALLED, stuck)
                    return
            now = time.monotonic()
            self.health.readiness(now)  # every tick, so linewatch_ready and linewatch_healthy stay current
            live_ok = self.health.last_liveness.ok  # computed by readiness() just now
            unhealthy_since = None if live_ok else unhealthy_since or now
            if unhealthy_since is not None and now - unhealthy_since >= self.settings.pipeline.unhealthy_exit_s:
                self._exit_unhealthy(now - unhealthy_since)
                return
            if now >= next_status:
                sd_notify(f"STATUS={self.health.status_line(now)}")
                next_status = now + _STATUS_EVERY_S
            if ping_every and now >= next_ping and live_ok:
                # Only a live pipeline pings systemd: a wedged stage or a hung main loop gets us restarted.
                sd_notify("WATCHDOG=1")
                next_ping = now + ping_every

    def _exit_unhealthy(self, for_s: float) -> None:
        """Not live for LINEWATCH_PIPELINE__UNHEALTHY_EXIT_S: fail the stuck stages (exit 5), whoever supervises.
        Docker's on-failure ignores health and a bare process has no watchdog: only an exit gets a restart."""
        stuck = self.health.unlive_stages() or [(self.publisher, "not live: " + "; ".join(
            self.health.last_liveness.reasons))]
        log.critical("unhealthy_exit", unhealthy_s=round(for_s, 1), limit_s=self.settings.pipeline.unhealthy_exit_s,
                     stages=[reason for _, reason in stuck], exit_code=int(ExitCode.WATCHDOG))
        for stage, reason in stuck:
            stage.fail(FailureKind.STALLED, reason)

    def _shutdown(self, code: ExitCode) -> ExitCode:
        sd_notify("STOPPING=1")
        deadline = time.monotonic() + self.settings.pipeline.shutdown_timeout_s
        self.stop.set()
        log.info("shutdown_started", exit_code=int(code), deadline_s=self.settings.pipeline.shutdown_timeout_s)
        stuck = stop_in_reverse(self.stages, deadline)
        if stuck:
            # The process exits anyway (stage threads are daemonic); a capture stuck in native code dies with it.
            log.error("stages_did_not_stop", stages=stuck)
        for plc in self.plcs:
            plc.stop()  # after the job stages: the verdicts of the stop reached them
        code = exit_code_for(self._failures())  # a stage may have failed while draining
        stats = self.outbox.stats()
        per_camera = {p.camera_id: self._camera_figures(p.camera_id) for p in self.pipelines}
        totals = {key: sum(figures[key] for figures in per_camera.values())
                  for key in ("frames_read", "frames_dropped", "frames_inspected", "events", "defects_new",
                              "defects_end")}
        value, total = self.metrics.value, self.metrics.total
        log.info("shutdown_complete", exit_code=int(code), **totals,
                 published=int(value("linewatch_events_published_total")),
                 refused=int(self.metrics.total("linewatch_events_refused_total")),
                 retried=int(self.metrics.total("linewatch_events_retried_total")),
                 dead_letters=stats.dead_letters,
                 lost=int(total("linewatch_events_lost_total")),
                 inferences_lost=int(total("linewatch_inferences_lost_total")),
                 detections_filtered={reason: sum(int(value("linewatch_detections_filtered_total", camera=camera,
                                                            reason=reason)) for camera in per_camera)
                                      for reason in _FILTER_REASONS},
                 outbox_pending=stats.pending_events, outbox_dropped_total=stats.dropped_total,
                 cameras=per_camera)
        self.outbox.close()
        return code

    def _camera_figures(self, camera_id: str) -> dict[str, int]:
        value, cam = self.metrics.value, {"camera": camera_id}
        return {"frames_read": int(value("linewatch_frames_read_total", **cam)),
                "frames_dropped": int(value("linewatch_frames_dropped_total", **cam)),
                "frames_inspected": int(value("linewatch_frames_inspected_total", **cam)),
                "events": int(value("linewatch_events_committed_total", **cam)),
                "defects_new": int(value("linewatch_defects_total", camera=camera_id, type="new")),
                "defects_end": int(value("linewatch_defects_total", camera=camera_id, type="end"))}
