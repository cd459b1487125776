"""A stand-in for paho's Client that plays the broker in-process, for the publisher's unit tier: it answers
CONNECT with a chosen CONNACK, PUBLISH with a chosen PUBACK reason code (or holds the PUBACKs back), drops the
link on request, and, as paho does for QoS 1, sends again after a reconnect what was never acknowledged. The
publisher's waker selects on `socket()`, so that is a real socket (one end of a socketpair). The integration
tier runs the same publisher against a real mosquitto."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode


@dataclass
class Sent:
    mid: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    acked: bool = False


class Info:
    def __init__(self, sent: Sent, rc: MQTTErrorCode = MQTTErrorCode.MQTT_ERR_SUCCESS) -> None:
        self.mid, self.rc, self._sent = sent.mid, rc, sent

    def is_published(self) -> bool:
        return self._sent.acked


@dataclass
class FakeBroker:
    connack: int = 0  # CONNACK reason code: 0 accepts, 0x86 bad user name or password, ...
    puback: Callable[[Sent], int | None] = lambda sent: 0  # PUBACK reason code for a message; None: hold it back
    connects: int = 0
    sent: list[Sent] = field(default_factory=list)  # every PUBLISH on the wire, re-sends included


class FakeClient:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.on_connect: Any = None
        self.on_disconnect: Any = None
        self.on_publish: Any = None
        self.on_message: Any = None
        self.on_subscribe: Any = None
        self._mid = 0
        self._state = "idle"  # idle | connecting | connected
        self._unacked: dict[int, Sent] = {}  # QoS 1 messages paho keeps until their PUBACK
        self._ours, self._theirs = socket.socketpair()

    def close(self) -> None:
        self._ours.close()
        self._theirs.close()

    # -- what the publisher calls -----------------------------------------------------------------------------
    def username_pw_set(self, username: str, password: str | None) -> None:
        pass

    def connect(self, host: str, port: int, keepalive: int = 60) -> MQTTErrorCode:
        self._state = "connecting"
        self.broker.connects += 1
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def is_connected(self) -> bool:
        return self._state == "connected"

    def socket(self) -> socket.socket | None:
        return self._ours if self._state == "connected" else None

    def loop(self, timeout: float = 1.0) -> MQTTErrorCode:
        if self._state == "connecting":
            reason = ReasonCode(PacketTypes.CONNACK, identifier=self.broker.connack)
            if not reason.is_failure:
                self._state = "connected"
                for sent in list(self._unacked.values()):  # paho re-sends un-acked QoS 1 messages
                    self.broker.sent.append(sent)
            else:
                self._state = "idle"
            self.on_connect(self, None, {}, reason, None)
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return self._deliver_acks()

    def want_write(self) -> bool:
        return False

    def loop_read(self) -> MQTTErrorCode:
        return self._deliver_acks()

    def loop_write(self) -> MQTTErrorCode:
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def loop_misc(self) -> MQTTErrorCode:
        return self._deliver_acks()

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> Info:
        self._mid += 1
        sent = Sent(self._mid, topic, bytes(payload), qos, retain)
        if self._state != "connected":
            return Info(sent, MQTTErrorCode.MQTT_ERR_NO_CONN)
        self.broker.sent.append(sent)
        self._unacked[sent.mid] = sent
        self._theirs.send(b"!")  # the broker has something to answer: the publisher's select wakes
        return Info(sent)

    def subscribe(self, subscriptions: Any) -> tuple[MQTTErrorCode, int]:
        return MQTTErrorCode.MQTT_ERR_SUCCESS, 0

    def disconnect(self) -> MQTTErrorCode:
        was = self._state == "connected"
        self._state = "idle"
        if was and self.on_disconnect is not None:
            self.on_disconnect(self, None, {}, ReasonCode(PacketTypes.DISCONNECT, identifier=0), None)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    # -- what a test does to the link ---------------------------------------------------------------------
    def drop(self) -> None:
        """The broker goes away: the next network pass finds the link lost."""
        self._state = "idle"

    def _deliver_acks(self) -> MQTTErrorCode:
        if self._state != "connected":
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        try:
            while self._ours.recv(4096, socket.MSG_DONTWAIT):
                pass
        except BlockingIOError:
            pass
        for mid, sent in list(self._unacked.items()):
            code = self.broker.puback(sent)
            if code is None:
                continue
            del self._unacked[mid]
            sent.acked = True
            self.on_publish(self, None, mid, ReasonCode(PacketTypes.PUBACK, identifier=code), None)
        return MQTTErrorCode.MQTT_ERR_SUCCESS
