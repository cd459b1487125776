"""Publish test messages to a real broker and wait for the broker's acknowledgements."""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, LogLevel
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

_log = logging.getLogger(__name__)


Outgoing = tuple[str, bytes | str, int, bool]  # topic, payload, qos, retain


def publish(
    host: str, port: int, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False, **connection: Any
) -> None:
    """Publish one message and return once the broker acknowledged it (QoS 1/2)."""
    publish_many(host, port, [(topic, payload, qos, retain)], **connection)


def publish_many(
    host: str,
    port: int,
    messages: Iterable[Outgoing],
    *,
    username: str | None = None,
    password: str | None = None,
    ca_certs: Path | None = None,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    mqtt5: bool = True,
    timeout: float = 5.0,
) -> None:
    """Publish ``messages`` in order over one connection; wait for every acknowledgement.

    Raises AssertionError if the connection is refused or an ack is missing by
    ``timeout``. Used instead of ``paho.mqtt.publish`` so its end-of-loop error
    log does not pollute a failing test's captured output.
    """
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5 if mqtt5 else mqtt.MQTTv311)
    cond = threading.Condition()
    state: dict[str, Any] = {"connected": False, "error": None, "closing": False}

    def on_connect(c: mqtt.Client, u: Any, f: mqtt.ConnectFlags, rc: ReasonCode, p: Properties | None) -> None:
        with cond:
            if rc.is_failure:
                state["error"] = str(rc)
            else:
                state["connected"] = True
            cond.notify_all()

    def on_log(c: mqtt.Client, u: Any, level: int, buf: str) -> None:
        if not (state["closing"] and buf.startswith("Client is not connected")):
            _log.log(mqtt.LOGGING_LEVEL.get(LogLevel(level), logging.DEBUG), "publisher -> %s:%s: %s", host, port, buf)

    client.on_connect = on_connect
    client.on_log = on_log
    if username is not None:
        client.username_pw_set(username, password)
    if ca_certs is not None or certfile is not None:
        client.tls_set(
            ca_certs=str(ca_certs) if ca_certs else None,
            certfile=str(certfile) if certfile else None,
            keyfile=str(keyfile) if keyfile else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    end = time.monotonic() + timeout
    client.connect(host, port, keepalive=30)
    client.loop_start()
    try:
        with cond:
            while not state["connected"] and state["error"] is None:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"publisher: no CONNACK from {host}:{port} within {timeout}s")
                cond.wait(remaining)
            if state["error"] is not None:
                raise AssertionError(f"publisher: connect to {host}:{port} refused: {state['error']}")
        infos = [(t, client.publish(t, p, q, r)) for t, p, q, r in messages]
        for topic, info in infos:
            info.wait_for_publish(max(0.0, end - time.monotonic()))
            if not info.is_published():
                raise AssertionError(f"publisher: {topic} not acknowledged by {host}:{port} within {timeout}s")
    finally:
        state["closing"] = True
        client.disconnect()
        client.loop_stop()
