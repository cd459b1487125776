"""The daemon's one set of counters: a prometheus-client registry, built once and passed to the stages.

Stages count into it; `/metrics`, `/healthz`, the `STATUS=` line sent to systemd and the `shutdown_complete`
log record all read it back, so they can never disagree. Names follow Prometheus conventions: the
`linewatch_` prefix, `_total` for counters, base units (`_seconds`, `_bytes`), a `camera` label where the
figure belongs to one camera. docs/operations.md lists every metric.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from daemon.frames import CameraState

# Inference on a CPU takes 10-100 ms, on a GPU 1-10 ms; capture → commit adds queueing on top.
_INFERENCE_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class OutboxDepth:
    events: int
    bytes: int
    oldest_age_s: float | None
    dead_letters: int = 0


class _OutboxCollector(Collector):
    """Reads the outbox once per scrape: depth is state on disk, not something the stages count."""

    def __init__(self, read: Callable[[], OutboxDepth]) -> None:
        self._read = read
        self._last = OutboxDepth(0, 0, None, 0)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            self._last = depth = self._read()
        except Exception:  # a closed or failing outbox must not break a scrape, a health probe or STATUS=
            depth = self._last
        yield GaugeMetricFamily("linewatch_outbox_events", "Events stored in the outbox, waiting for a PUBACK",
                                value=depth.events)
        yield GaugeMetricFamily("linewatch_outbox_bytes", "Payload bytes stored in the outbox", value=depth.bytes)
        yield GaugeMetricFamily("linewatch_outbox_oldest_event_age_seconds",
                                "Age of the oldest stored event (0 when the outbox is empty)",
                                value=depth.oldest_age_s or 0.0)
        yield GaugeMetricFamily("linewatch_outbox_dead_letters",
                                "Events the broker refused for good, kept aside in the outbox (linewatch dead-letters)",
                                value=depth.dead_letters)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # collected lazily: the outbox is opened after the registry is built


class Metrics:
    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry(auto_describe=True)
        cam = ["camera"]
        self.frames_read = Counter("linewatch_frames_read", "Frames read from the camera", cam, registry=registry)
        self.frames_inspected = Counter("linewatch_frames_inspected", "Frames the model ran on", cam,
                                        registry=registry)
        self.frames_dropped = Counter(
            "linewatch_frames_dropped",
            "Frames the capture→detector hand-off dropped because the detector was busy (live cameras)",
            cam, registry=registry)
        self.camera_reconnects = Counter("linewatch_camera_reconnects",
                                         "Failed camera opens or reads that led to a retry", cam, registry=registry)
        self.camera_frames_lost = Counter("linewatch_camera_frames_lost",
                                          "Frames the camera sent incomplete (GenICam: lost packets); each leaves a "
                                          "gap in the frame numbers", cam, registry=registry)
        self.camera_state = Enum("linewatch_camera_state", "Current camera state (1 for the current one)", cam,
                                 states=[state.value for state in CameraState], registry=registry)
        self.inference_seconds = Histogram(
            "linewatch_inference_seconds", "Model time of the batches that carried the camera's frame (or its tiles)",
            cam,
            buckets=_INFERENCE_BUCKETS, registry=registry)
        self.batch_size = Histogram("linewatch_batch_size",
                                    "Model inputs per batched inference: frames (one per live camera, a file's "
                                    "waiting ones) and tiles, a tiled camera's per_batch at most",
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64), registry=registry)
        self.capture_to_commit_seconds = Histogram(
            "linewatch_capture_to_commit_seconds",
            "From the frame's capture to its event being committed to the outbox", cam,
            buckets=_LATENCY_BUCKETS, registry=registry)
        self.inferences_lost = Counter(
            "linewatch_inferences_lost",
            "Inference results the event stage never received (stopping), or frames the model failed on", cam,
            registry=registry)
        self.events_committed = Counter("linewatch_events_committed", "Defect events committed to the outbox", cam,
                                        registry=registry)
        self.events_lost = Counter("linewatch_events_lost", "Defect events that could not be stored at all",
                                   ["camera", "reason"], registry=registry)
        self.events_dropped = Counter(
            "linewatch_events_dropped",
            "Stored events dropped to honour an outbox bound (max_age, max_events, max_bytes, disk_full)",
            ["reason"], registry=registry)
        self.snapshots_dropped = Counter(
            "linewatch_snapshots_dropped", "Stored snapshots dropped to honour their own bound, the age bound or a "
            "full disk (pictures go before defect events)", ["reason"], registry=registry)
        self.detections_filtered = Counter(
            "linewatch_detections_filtered", "Detections the rules dropped (ignored_class, confidence, area, roi)",
            ["camera", "reason"], registry=registry)
        self.defects = Counter("linewatch_defects", "Defect lifecycle events committed (type: new, end)",
                               ["camera", "type"], registry=registry)
        self.jobs_triggered = Counter("linewatch_jobs_triggered", "Inspection jobs started, by trigger source",
                                      ["camera", "source"], registry=registry)
        self.triggers_refused = Counter("linewatch_triggers_refused", "Trigger messages that were not one (bad part "
                                        "id, bad JSON): no job", ["camera", "source"], registry=registry)
        self.job_frames_missed = Counter("linewatch_job_frames_missed", "Inspected frames the job stage could not "
                                         "take (its inbox full): gaps in the jobs' windows", cam, registry=registry)
        self.verdicts = Counter("linewatch_verdicts", "Inspection verdicts (result: pass, ng, unknown)",
                                ["camera", "result"], registry=registry)
        self.verdict_latency_seconds = Histogram(
            "linewatch_verdict_latency_seconds", "From a job's trigger to its verdict", cam,
            buckets=_LATENCY_BUCKETS, registry=registry)
        self.plc_results_lost = Counter(
            "linewatch_plc_results_lost", "Verdicts a PLC output did not present (overrun: its buffer was full; "
            "expired: stale before the PLC acknowledged the one before); MQTT has them all",
            ["output", "camera", "reason"], registry=registry)
        self.plc_clients = Gauge("linewatch_plc_clients", "Clients connected to a PLC server", ["output"],
                                 registry=registry)
        self.tracks_open = Gauge("linewatch_tracks_open", "Tracks the camera's tracker holds", ["camera"],
                                 registry=registry)
        self.snapshots = Counter(
            "linewatch_snapshots", "Snapshot views by outcome: stored, skipped (the encoder was busy), too_large",
            ["camera", "outcome"], registry=registry)
        self.events_published = Counter("linewatch_events_published", "Defect events the broker acknowledged",
                                        registry=registry)
        self.events_refused = Counter(
            "linewatch_events_refused", "Events the broker refused for good (MQTT 5 reason code: 0x87 not authorized, "
            "0x90 topic name invalid, 0x95 packet too large, 0x99 payload format invalid): moved to the dead letters",
            ["code"], registry=registry)
        self.events_retried = Counter(
            "linewatch_events_retried", "Events the broker refused for now (any other MQTT 5 failure code, e.g. 0x97 "
            "quota exceeded, 0x80 unspecified): sent again after a backoff", ["code"], registry=registry)
        self.mqtt_connected = Gauge("linewatch_mqtt_connected", "1 while the MQTT session is established",
                                    registry=registry)
        self.mqtt_connect_failures = Counter("linewatch_mqtt_connect_failures",
                                             "Failed or lost MQTT connections", registry=registry)
        self.build = Info("linewatch_build", "Versions of linewatch, torch and CUDA, and the model's SHA-256",
                          registry=registry)
        self.ready = Gauge("linewatch_ready", "1 when /readyz would answer 200", registry=registry)
        self.healthy = Gauge("linewatch_healthy", "1 when /healthz would answer 200", registry=registry)

    def observe_outbox(self, read: Callable[[], OutboxDepth]) -> None:
        self.registry.register(_OutboxCollector(read))

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when it was never set): how every report reads the counters back."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def total(self, name: str) -> float:
        """The sum of a sample over every label set (e.g. events lost for any reason, on any camera)."""
        return sum(
            sample.value
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name == name
        )
