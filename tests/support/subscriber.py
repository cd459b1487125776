"""An MQTT subscriber that records what the daemon really published.

Built on paho-mqtt's VERSION2 callbacks, like the daemon, but deliberately
independent of the daemon's own MQTT code so a bug there cannot hide itself.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, LogLevel
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    arrived: float  # time.monotonic() when the callback ran

    def text(self) -> str:
        return self.payload.decode()

    def json(self) -> Any:
        return json.loads(self.payload)


Predicate = Callable[[list[Message]], bool]

_log = logging.getLogger(__name__)


class Subscriber:
    """Subscribe to ``topics`` at QoS ``qos`` and record every message.

    With ``persistent=True`` the broker keeps the session (and queues QoS>0
    messages) while this client is away, under the fixed ``client_id``:
    MQTT 3.1.1 uses clean_session=False, MQTT 5 clean_start=False plus a
    session expiry interval.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topics: str | Sequence[str] = "#",
        *,
        qos: int = 1,
        client_id: str = "",
        persistent: bool = False,
        mqtt5: bool = True,
        session_expiry_s: int = 3600,
        username: str | None = None,
        password: str | None = None,
        ca_certs: Path | None = None,
        certfile: Path | None = None,
        keyfile: Path | None = None,
        keepalive: int = 30,
    ) -> None:
        if persistent and not client_id:
            raise ValueError("a persistent session needs a fixed client_id")
        self.host = host
        self.port = port
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.qos = qos
        self.persistent = persistent
        self.mqtt5 = mqtt5
        self.session_expiry_s = session_expiry_s
        self.keepalive = keepalive
        self._client_label = f"subscriber {client_id or '(auto id)'} -> {host}:{port}"

        self._cond = threading.Condition()
        self._messages: list[Message] = []
        self._connected = False
        self._subscribed = False
        self._connect_count = 0
        self._session_present: bool | None = None
        self._connect_error: str | None = None
        self._pending_sub_mid: int | None = None
        self._started = False
        self._closing = False

        protocol = mqtt.MQTTv5 if mqtt5 else mqtt.MQTTv311
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            # MQTT 5 takes clean_start at connect time; paho rejects clean_session there.
            clean_session=None if mqtt5 else not persistent,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        if ca_certs is not None or certfile is not None:
            self._client.tls_set(
                ca_certs=str(ca_certs) if ca_certs else None,
                certfile=str(certfile) if certfile else None,
                keyfile=str(keyfile) if keyfile else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        self._client.on_log = self._on_log
        # Reconnect quickly: tests restart brokers and expect the subscriber back.
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect

    # -- lifecycle ---------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Subscriber:
        """Connect and return once the broker acknowledged the subscription."""
        properties: Properties | None = None
        kwargs: dict[str, Any] = {}
        if self.mqtt5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self.session_expiry_s if self.persistent else 0
            kwargs["clean_start"] = not self.persistent
        self._client.connect_async(self.host, self.port, self.keepalive, properties=properties, **kwargs)
        self._client.loop_start()
        self._started = True
        self.wait_subscribed(timeout)
        return self

    def close(self) -> None:
        """Disconnect cleanly (a persistent session stays on the broker) and stop the loop."""
        if not self._started:
            return
        self._started = False
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- state -------------------------------------------------------------

    @property
    def connected(self) -> bool:
        with self._cond:
            return self._connected

    @property
    def connect_count(self) -> int:
        """How many CONNACKs succeeded: 2 after one reconnect."""
        with self._cond:
            return self._connect_count

    @property
    def session_present(self) -> bool | None:
        """The broker's session-present flag on the latest successful connect."""
        with self._cond:
            return self._session_present

    def wait_subscribed(self, timeout: float) -> None:
        """Wait for the SUBACK of the current connection."""
        self._wait_state(lambda: self._subscribed, timeout, "subscription acknowledged")

    def wait_disconnected(self, timeout: float) -> None:
        self._wait_state(lambda: not self._connected, timeout, "disconnected", fail_on_error=False)

    # -- messages ----------------------------------------------------------

    def messages(self, topic_suffix: str | None = None) -> list[Message]:
        """Snapshot of messages so far, optionally only topics ending in ``topic_suffix``."""
        with self._cond:
            return [m for m in self._messages if topic_suffix is None or m.topic.endswith(topic_suffix)]

    def json_payloads(self, topic_suffix: str | None = None) -> list[Any]:
        return [m.json() for m in self.messages(topic_suffix)]

    def clear(self) -> None:
        with self._cond:
            self._messages.clear()

    def wait_for(self, predicate: Predicate, timeout: float) -> list[Message]:
        """Wait until ``predicate(all messages so far)`` is true; return that snapshot.

        Raises AssertionError summarising what did arrive when ``timeout`` passes.
        IndexError/KeyError from the predicate count as "not yet" (``ms[-1]`` on
        no messages, a payload lacking a key) and are reported on timeout. The
        predicate runs while holding the lock, so it must be quick and must not
        call back into this object.
        """
        end = time.monotonic() + timeout
        last_error: Exception | None = None
        with self._cond:
            while True:
                snapshot = list(self._messages)
                try:
                    if predicate(snapshot):
                        return snapshot
                except (IndexError, KeyError) as exc:
                    last_error = exc
                remaining = end - time.monotonic()
                if remaining <= 0:
                    error = f"; predicate last raised {last_error!r}" if last_error is not None else ""
                    raise AssertionError(
                        f"condition not met within {timeout}s on {self.topics}{error}; {self._summary(snapshot)}"
                    )
                self._cond.wait(remaining)

    def wait_for_count(self, count: int, timeout: float, topic_suffix: str | None = None) -> list[Message]:
        """Wait for at least ``count`` messages (matching ``topic_suffix``); return those."""

        def enough(msgs: list[Message]) -> bool:
            return sum(1 for m in msgs if topic_suffix is None or m.topic.endswith(topic_suffix)) >= count

        msgs = self.wait_for(enough, timeout)
        return [m for m in msgs if topic_suffix is None or m.topic.endswith(topic_suffix)]

    # -- paho callbacks (network thread) -----------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            if reason_code.is_failure:
                self._connect_error = f"connect refused: {reason_code}"
                self._cond.notify_all()
                return
            self._connected = True
            self._subscribed = False
            self._connect_error = None
            self._connect_count += 1
            self._session_present = flags.session_present
            # Subscribing here (not after connect()) re-subscribes on every reconnect.
            _, mid = client.subscribe([(t, self.qos) for t in self.topics])
            self._pending_sub_mid = mid
            self._cond.notify_all()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._cond:
            failed = [str(rc) for rc in reason_codes if rc.is_failure]
            if failed:
                self._connect_error = f"subscription refused: {failed}"
            elif mid == self._pending_sub_mid:
                self._subscribed = True
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        msg = Message(
            topic=message.topic,
            payload=bytes(message.payload),
            qos=message.qos,
            retain=bool(message.retain),
            arrived=time.monotonic(),
        )
        with self._cond:
            self._messages.append(msg)
            self._cond.notify_all()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self._connected = False
            self._subscribed = False
            self._cond.notify_all()

    def _on_log(self, client: mqtt.Client, userdata: Any, level: int, buf: str) -> None:
        # paho's loop thread runs one more time after our own disconnect() and
        # reports the closed socket as an error; that is not a failure.
        if self._closing and buf.startswith("Client is not connected"):
            return
        # A named logger, so pytest's captured log says the harness wrote it, not the daemon.
        _log.log(mqtt.LOGGING_LEVEL.get(LogLevel(level), logging.DEBUG), "%s: %s", self._client_label, buf)

    # -- helpers -----------------------------------------------------------

    def _wait_state(self, ready: Callable[[], bool], timeout: float, what: str, fail_on_error: bool = True) -> None:
        end = time.monotonic() + timeout
        with self._cond:
            while not ready():
                if fail_on_error and self._connect_error is not None:
                    raise AssertionError(f"subscriber to {self.host}:{self.port}: {self._connect_error}")
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"subscriber to {self.host}:{self.port} not {what} within {timeout}s")
                self._cond.wait(remaining)

    @staticmethod
    def _summary(msgs: list[Message], last: int = 10) -> str:
        if not msgs:
            return "no messages arrived"
        lines = [f"{len(msgs)} message(s), last {min(last, len(msgs))}:"]
        for m in msgs[-last:]:
            preview = m.payload[:200].decode(errors="replace")
            lines.append(f"  {m.topic} retain={m.retain} qos={m.qos} {preview}")
        return "\n".join(lines)
