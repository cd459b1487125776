"""The publisher's network wait, woken the moment there is something to send.

paho's own `loop(timeout)` sleeps in select() on the broker's socket: a newly committed event would wait for
the timeout (it was 50 ms, polled; that was most of the publisher's share of glass-to-MQTT). This runs the
same pass through paho's public external-loop calls (`socket`, `want_write`, `loop_read`, `loop_write`,
`loop_misc`), with one more socket in the select(): a socketpair that `wake()` writes a byte to. The outbox
calls `wake()` after each commit, and so do a status change and a stop.
"""

from __future__ import annotations

import contextlib
import select
import socket

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode


class Waker:
    def __init__(self) -> None:
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)

    def wake(self) -> None:
        """From any thread; never blocks (a full pair already holds a wake-up)."""
        with contextlib.suppress(OSError):  # BlockingIOError included
            self._write.send(b"\0")

    def network_pass(self, client: paho.Client, timeout: float) -> MQTTErrorCode:
        """One pass of paho's loop, returning at once when woken. MQTT_ERR_NO_CONN without a socket."""
        sock = client.socket()
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        if getattr(sock, "pending", lambda: 0)() > 0:  # TLS: bytes already decrypted, select() would not see them
            timeout = 0.0
        writing = client.want_write()
        try:
            readable, writable, _ = select.select([sock, self._read], [sock] if writing else [], [], timeout)
        except (OSError, ValueError, TypeError):  # the socket was closed under us (a disconnect)
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        if self._read in readable:
            self._drain()
        if sock in readable or getattr(sock, "pending", lambda: 0)() > 0:
            rc = client.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or client.socket() is None:
                return rc
        if sock in writable or client.want_write():
            rc = client.loop_write()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return rc
        return client.loop_misc()

    def _drain(self) -> None:
        try:
            while self._read.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        self._read.close()
        self._write.close()
