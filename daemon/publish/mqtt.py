"""The MQTT publisher: one thread that owns the paho client and drains the durable outbox.

paho's own network thread and reconnect loop are not used: paho swallows the reason a connection failed
(TLS verification, refused port) and reconnects without jitter. This thread runs `client.loop()` itself, so
every callback happens here, the in-flight map needs no lock, and each failure is logged once with its
cause. An event leaves the outbox only on the broker's PUBACK; paho re-sends un-acked QoS 1 messages after a
reconnect, and after a restart the outbox re-sends everything still in it.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from daemon.backoff import Backoff
from daemon.frames import CameraState, CameraStatus, ModelInfo, utc_now
from daemon.lifecycle import StageThread
from daemon.logs import get_logger
from daemon.metrics import Metrics
from daemon.outbox import Outbox, OutboxError, OutboxRetryableError
from daemon.payloads import CONNECTION_LOST
from daemon.publish.commands import Commands
from daemon.publish.refusals import Refusals, publish_size
from daemon.publish.status import RUNNING, SHUTDOWN, StatusPayloads
from daemon.publish.tls import build_tls_context, tls_failure_hint
from daemon.publish.wakeup import Waker
from daemon.settings.mqtt import MqttSettings, broker_address
from daemon.topics import availability_topic, event_topic, status_topic

log = get_logger("linewatch.mqtt")

# How long paho's own loop blocks while connecting and saying goodbye. In the steady state the network wait is
# woken by the outbox's commit instead (wakeup.py), and sleeps at most _IDLE_S when nothing happens.
_LOOP_TIMEOUT_S = 0.05
_IDLE_S = 1.0
_CONNACK_TIMEOUT_S = 10.0  # a broker that accepts TCP but never answers CONNECT (SIGSTOPped, overloaded)
_AGE_SWEEP_S = 60.0  # how often the outbox's age bound is enforced without new events
_OUTBOX_RETRY_S = 1.0  # after a retryable outbox error
_R = TypeVar("_R")


class MqttPublisher(StageThread):
    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        camera_ids: Sequence[str],
        model: ModelInfo,
        outbox: Outbox,
        stop: threading.Event,
        *,
        topic_prefix: str | None = None,
        metrics: Metrics | None = None,
        fingerprint: Mapping[str, object] | None = None,
        stats: Sequence[tuple[str, float, Callable[[], bytes]]] = (),
        commands: Mapping[str, Callable[[bytes], None]] | None = None,
    ) -> None:
        super().__init__("publish:mqtt", stop)
        self._settings = settings
        self._payloads = StatusPayloads(client_id, tuple(camera_ids), model, dict(fingerprint or {}), settings.payloads)
        self._outbox = outbox
        self._stop = stop
        self._prefix = prefix = topic_prefix or settings.topic_prefix
        self._status_topics = {camera_id: status_topic(prefix, camera_id) for camera_id in camera_ids}
        self._availability_topic = availability_topic(prefix, client_id)
        self._client_id = client_id
        self._host, self._port, self._tls = broker_address(settings.url)
        self._backoff = Backoff(settings.reconnect_min_s, settings.reconnect_max_s)
        self._metrics = metrics or Metrics()
        self._refusals = Refusals(outbox, self._metrics, Backoff(settings.reconnect_min_s, settings.reconnect_max_s))
        self._refusals.count_dead_letters()
        self._dead_letters = self._refusals.dead_letters  # as last published in the status
        self._inflight: dict[int, tuple[int, str, str]] = {}  # paho mid → (outbox rowid, kind, topic)
        self._acked: list[int] = []  # rowids PUBACKed during this loop pass: settled in one transaction (one fsync)
        self._cursor = 0  # highest outbox rowid handed to paho; the outbox never reuses ids
        self._finish = threading.Event()  # set by stop(): leave once the outbox is empty or at the deadline
        self._deadline = float("inf")
        self._status_lock = threading.Lock()
        self._camera_status = {camera_id: CameraStatus(camera_id, CameraState.CONNECTING, "starting", utc_now())
                               for camera_id in camera_ids}
        self._status_dirty = set(camera_ids)  # cameras whose status is to be published (again)
        self._connack_due: float | None = None
        self._max_packet: int | None = None  # the broker's Maximum Packet Size (MQTT 5 CONNACK), if it says
        self._socket_error: str | None = None  # paho's first socket error of this connection attempt
        self._next_sweep = time.monotonic() + _AGE_SWEEP_S
        self._disk_full = False  # as last published in the status
        # (topic, interval, render): live figures, published retained straight from here, never from the outbox
        # (an hour-old fps figure replayed after an outage would mislead whoever reads it)
        self._stats = list(stats)
        self._next_stats = [time.monotonic() + interval for _, interval, _ in self._stats]
        self._commands = Commands(commands)  # job triggers (commands.py)
        self.connected = False
        self.last_error: str | None = None
        self._client = self._build_client(client_id)
        self._waker = Waker()
        outbox.on_commit(self._waker.wake)  # a committed event is sent now, not at the next poll

    # -- construction -------------------------------------------------------------------------------------
    def _build_client(self, client_id: str) -> paho.Client:
        v5 = self._settings.protocol == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else True,
            reconnect_on_failure=False,  # this thread reconnects, with jittered backoff and logged causes
        )
        client.enable_logger(logging.getLogger("paho"))
        client.max_inflight_messages_set(self._settings.max_inflight)
        client.max_queued_messages_set(0)
        if self._tls:
            context = build_tls_context(self._settings)
            client.tls_set_context(context)
            if self._settings.tls_insecure:
                client.tls_insecure_set(True)
        # One connection has one last will: the daemon's availability. Each camera's status is retained as last
        # published; a subscriber trusts it while the availability is `online`.
        will = self._payloads.availability(online=False, reason=CONNECTION_LOST, with_time=False)
        client.will_set(self._availability_topic, will, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_log = self._on_paho_log
        return client

    def _status_payload(self, camera_id: str, state: CameraState, reason: str) -> bytes:
        return self._payloads.camera(camera_id, state, reason, disk_full=self._disk_full,
                                     dead_letters=self._dead_letters)

    # -- stage interface ----------------------------------------------------------------------------------
    def set_camera_status(self, status: CameraStatus) -> None:
        """Called from a capture thread on every camera state change; published retained."""
        with self._status_lock:
            self._camera_status[status.camera_id] = status
            self._status_dirty.add(status.camera_id)
        self._waker.wake()

    def stop(self, deadline: float | None = None) -> None:
        """Upstream has stopped: deliver what is left until `deadline`, publish `offline`, disconnect."""
        self._deadline = time.monotonic() if deadline is None else deadline
        self._finish.set()
        self._waker.wake()

    # -- the loop -------------------------------------------------------------------------------------------
    def run(self) -> None:
        # An exception escaping is a bug: the stage base reports it (exit 1) after the goodbye below.
        try:
            while not self._outbox_ok(self._done):
                if not self._link_up():
                    continue
                with self.progress.busy():
                    rc = self._outbox_ok(self._one_pass)
                if rc is not None and rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self._lost(f"network loop: {paho.error_string(rc)}")
        finally:
            self._say_goodbye()
            self._delete_acked()
            self._waker.close()

    def _outbox_ok(self, call: Callable[[], _R]) -> _R | None:
        """Run one outbox-touching step; a retryable outbox error (a full disk, an I/O error, a lock) is logged
        and waited out here, never a crash: the events stay stored and the next pass tries again."""
        try:
            return call()
        except OutboxRetryableError as exc:
            log.warning("outbox_read_failed", error=str(exc))
            self._finish.wait(_OUTBOX_RETRY_S)
            return None

    def _one_pass(self) -> MQTTErrorCode:
        self._fill_inflight()
        self._publish_status_if_changed()
        self._publish_stats_when_due()
        self._sweep_age_bound()
        rc = self._waker.network_pass(self._client, self._idle_timeout())
        self._delete_acked()
        self._refusals.bury()
        return rc

    def _idle_timeout(self) -> float:
        """The network wait when nothing wakes it: until the next stats or sweep is due, at most _IDLE_S."""
        retry = [] if self._refusals.due_at is None else [self._refusals.due_at]  # refused events due again
        due = min([self._next_sweep, *self._next_stats, self._deadline, *retry], default=self._next_sweep)
        return max(0.0, min(_IDLE_S, due - time.monotonic()))

    def _done(self) -> bool:
        if not self._finish.is_set():
            return False
        if time.monotonic() >= self._deadline:
            try:
                pending = self._outbox.stats().pending_events
            except OutboxError:
                pending = -1  # unknown; what is stored stays stored
            if self._inflight or pending:
                log.warning("shutdown_with_pending_events", pending=pending,
                            note="they stay in the outbox and are sent after the restart")
            return True
        # Refused events waiting out their backoff are still to send: the drain waits for them too (to the deadline).
        return (self.connected and not self._inflight and self._refusals.due_at is None
                and not self._outbox.pending(1, self._cursor))

    def _link_up(self) -> bool:
        """Connect if needed. True when the session is established (CONNACK received)."""
        if self._client.is_connected():
            return True
        if self._connack_due is not None:  # TCP/TLS is up, waiting for CONNACK
            if time.monotonic() < self._connack_due:
                rc = self._client.loop(timeout=_LOOP_TIMEOUT_S)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and self._connack_due is not None:
                    # Closed before CONNACK. With TLS 1.3 the broker's refusal of our client certificate lands
                    # here, after the handshake: report it now with its cause, not as a "stall" 10 s later.
                    cause = self._socket_error or paho.error_string(rc)
                    self._lost(self._with_tls_hint(f"connection closed before CONNACK: {cause}", after_handshake=True))
                return False
            self._lost("no CONNACK within deadline (broker stalled?)")
            return False
        try:
            self._socket_error = None
            if self._settings.username:
                # Read at every connect (docs/configuring.md, Credentials): a rotated PASSWORD_FILE is picked up.
                self._client.username_pw_set(self._settings.username, self._settings.password_value())
            with self.progress.busy():  # the TCP connect and the TLS handshake: a hung one makes the stage wedged
                self._client.connect(self._host, self._port, keepalive=self._settings.keepalive_s)
            self._connack_due = time.monotonic() + _CONNACK_TIMEOUT_S
        except (OSError, ssl.SSLError, ValueError) as exc:
            reason = f"connect to {self._host}:{self._port} failed: {exc}"
            self._lost(self._with_tls_hint(reason, after_handshake=False))
        return False

    def _with_tls_hint(self, reason: str, *, after_handshake: bool) -> str:
        """OpenSSL's words are exact but cryptic to an operator; add what to check, for mqtts:// only."""
        hint = tls_failure_hint(reason, self._settings, after_handshake=after_handshake) if self._tls else ""
        return f"{reason} ({hint})" if hint else reason

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        self._metrics.mqtt_connected.set(1 if connected else 0)

    def _lost(self, reason: str) -> None:
        was_connected = self.connected
        self._set_connected(False)
        self._connack_due = None
        self._client.disconnect()  # closes the socket; paho keeps un-acked messages for the resend
        self._metrics.mqtt_connect_failures.inc()
        if was_connected or reason != self.last_error:
            log.error("mqtt_disconnected", reason=reason, broker=f"{self._host}:{self._port}",
                      attempts=self._backoff.attempts + 1)
        self.last_error = reason
        delay = self._backoff.failed(reason)
        if self._finish.is_set():  # draining: keep trying, but never past the drain deadline
            time.sleep(min(delay, max(0.0, self._deadline - time.monotonic())))
        else:
            self._finish.wait(delay)

    def _delete_acked(self) -> None:
        """Hand this pass's PUBACKs to the outbox: it keeps each for LINEWATCH_MQTT__ACK_GRACE_S, then deletes it."""
        if self._acked:
            try:
                self._outbox.ack_many(self._acked)
            except OutboxRetryableError as exc:
                # The broker has them; they stay stored and are sent again after a restart (at least once).
                log.warning("outbox_ack_failed", error=str(exc), events=len(self._acked))
            self._acked = []

    def _fill_inflight(self) -> None:
        room = self._settings.max_inflight - len(self._inflight)
        if room <= 0 or not self.connected or self._refusals.holding:
            return
        batch = self._refusals.due(room)  # refused for now, due again: before anything new
        batch += self._outbox.pending(room - len(batch), after_rowid=self._cursor)
        for stored in batch:
            topic = event_topic(self._prefix, stored.kind, stored.camera_id, stored.event_id)
            if self._max_packet and (size := publish_size(topic, stored.payload)) > self._max_packet:
                self._refusals.refused(stored.rowid, stored.kind, 0x95, f"Packet too large: {size} bytes, the "
                                       f"broker takes at most {self._max_packet} (its Maximum Packet Size)", topic)
                self._refusals.sent(stored.rowid)
                self._cursor = max(self._cursor, stored.rowid)
                continue
            info = self._client.publish(topic, stored.payload, qos=self._settings.qos, retain=False)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return  # connection dropped mid-fill; the cursor did not move past this one
            self._inflight[info.mid] = (stored.rowid, stored.kind, topic)
            self._refusals.sent(stored.rowid)
            self._cursor = max(self._cursor, stored.rowid)

    def _publish_status_if_changed(self) -> None:
        disk_full, dead = self._outbox.disk_full, self._refusals.dead_letters
        with self._status_lock:
            if disk_full != self._disk_full or dead != self._dead_letters:
                self._disk_full, self._dead_letters = disk_full, dead
                self._status_dirty.update(self._camera_status)
            if not self._status_dirty or not self.connected:
                return
            changed = [self._camera_status[camera_id] for camera_id in sorted(self._status_dirty)]
            self._status_dirty.clear()
        for status in changed:
            payload = self._status_payload(status.camera_id, status.state, status.reason)
            self._client.publish(self._status_topics[status.camera_id], payload, qos=1, retain=True)

    def _publish_stats_when_due(self) -> None:
        now = time.monotonic()
        for index, (topic, interval, render) in enumerate(self._stats):
            if now >= self._next_stats[index]:
                self._next_stats[index] = now + interval
                self._client.publish(topic, render(), qos=1, retain=True)

    def _sweep_age_bound(self) -> None:
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + _AGE_SWEEP_S
            self._outbox.enforce_limits()
            self._refusals.count_dead_letters()  # `linewatch dead-letters --requeue` may have run meanwhile

    def _say_goodbye(self) -> None:
        """Clean `offline` (retained) then DISCONNECT, so the broker does not send the last will."""
        if self._client.is_connected():
            with self._status_lock:
                last = list(self._camera_status.values())
            infos = []
            for status in last:
                # A watchdog exit leaves `stalled` (the station is blind and restarting), anything else `offline`.
                state, reason = (status.state, status.reason) if status.state is CameraState.STALLED else (
                    CameraState.OFFLINE, SHUTDOWN)
                payload = self._status_payload(status.camera_id, state, reason)
                infos.append(self._client.publish(self._status_topics[status.camera_id], payload, qos=1, retain=True))
            goodbye = self._payloads.availability(online=False, reason=SHUTDOWN)
            infos.append(self._client.publish(self._availability_topic, goodbye, qos=1, retain=True))
            until = time.monotonic() + 2.0
            while (not all(info.is_published() for info in infos) and time.monotonic() < until
                   and self._client.is_connected()):
                self._client.loop(timeout=_LOOP_TIMEOUT_S)
            self._client.disconnect()
            self._client.loop_write()  # flush the DISCONNECT so the broker discards our last will
        log.info("mqtt_stopped", published_total=int(self._metrics.value("linewatch_events_published_total")),
                 inflight=len(self._inflight))

    # -- paho callbacks (run on this thread, inside client.loop()) --------------------------------------------
    def _on_connect(self, client: paho.Client, _: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self._connack_due = None
        if reason.is_failure:
            # Bad credentials or not authorised: the broker closes the link; we retry with backoff.
            self._lost(f"broker refused the connection: {reason} (code {reason.value})")
            return
        self._set_connected(True)
        self._backoff.succeeded()
        limit = getattr(props, "MaximumPacketSize", None)  # MQTT 5 CONNACK: the largest packet the broker takes
        self._max_packet = int(limit) if limit else None
        self._client.publish(self._availability_topic, self._payloads.availability(online=True, reason=RUNNING),
                             qos=1, retain=True)  # over the broker's retained copy of our last will
        with self._status_lock:
            self._status_dirty.update(self._camera_status)  # re-assert every camera's retained status
        if subscriptions := self._commands.subscriptions():
            self._client.subscribe(subscriptions)
        log.info("mqtt_connected", broker=f"{self._host}:{self._port}", client_id=self._client_id, tls=self._tls,
                 protocol=self._settings.protocol, resending=len(self._inflight))

    def _on_paho_log(self, client: paho.Client, _: Any, level: int, message: str) -> None:
        # paho tells why a socket failed (a TLS alert, a reset) only in its log and returns a bare "connection
        # lost"; keep the first such message of this attempt (later ones are follow-ups like "not connected") so
        # `mqtt_disconnected` can name the cause. (enable_logger still logs every message.)
        if level == paho.MQTT_LOG_ERR and self._socket_error is None:
            self._socket_error = message

    def _on_subscribe(self, client: paho.Client, _: Any, mid: int, reasons: list[ReasonCode], props: Any) -> None:
        """SUBACK: a trigger published from now on reaches us (at `mqtt_connected` the SUBSCRIBE was only queued)."""
        refused, topics = [str(r) for r in reasons if r.is_failure], [t for t, _ in self._commands.subscriptions()]
        if refused:
            log.warning("mqtt_subscribe_refused", topics=topics, reasons=refused)
        else:
            log.info("mqtt_subscribed", topics=topics)

    def _on_message(self, client: paho.Client, _: Any, message: paho.MQTTMessage) -> None:
        self._commands.dispatch(message.topic, bytes(message.payload), bool(message.retain))

    def _on_disconnect(self, client: paho.Client, _: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if self.connected and not self._finish.is_set():
            log.warning("mqtt_connection_closed", reason=str(reason))
        self._set_connected(False)

    def _on_publish(self, client: paho.Client, _: Any, mid: int, reason: ReasonCode, props: Any) -> None:
        row = self._inflight.pop(mid, None)
        if row is None:
            return  # a status or stats message
        rowid, kind, topic = row
        if reason.is_failure:  # never deleted: sent again later, or moved to the dead letters (refusals.py)
            self._refusals.refused(rowid, kind, int(reason.value), str(reason), topic)
            return
        self._refusals.accepted(rowid)
        if kind == "defect":  # the events counters count defect events; pictures have their own
            self._metrics.events_published.inc()
        self._acked.append(rowid)
