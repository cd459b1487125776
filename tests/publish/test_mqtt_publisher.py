"""The MQTT publisher against a fake paho client (tests/publish/fake_paho.py) and a real outbox on disk: order,
acknowledgements, a lost link, refused codes and a refused connection, in well under a second each. The same
publisher meets a real mosquitto in tests/integration/."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.frames import ModelInfo
from daemon.outbox import Outbox
from daemon.outbox.types import OutboxLimits
from daemon.publish.mqtt import MqttPublisher
from daemon.settings.mqtt import MqttSettings
from tests.publish.fake_paho import FakeBroker, FakeClient, Sent

MODEL = ModelInfo("linewatch-defects", "0" * 64, 320, "cpu", ("scratch",))
EVENTS = "linewatch/cam/defects"


class Rig:
    def __init__(self, tmp_path: Path, broker: FakeBroker) -> None:
        self.broker = broker
        self.stop = threading.Event()
        self.outbox = Outbox(tmp_path / "outbox.sqlite3", OutboxLimits(max_bytes=10_000_000, max_age_s=1e9))
        settings = MqttSettings(url="mqtt://127.0.0.1:1883", reconnect_min_s=0.01,  # type: ignore[call-arg]
                                reconnect_max_s=0.05)
        self.publisher = MqttPublisher(settings, "linewatch-test", ["cam"], MODEL, self.outbox, self.stop)
        self.client = FakeClient(broker)
        for name in ("on_connect", "on_disconnect", "on_publish", "on_message", "on_subscribe"):
            setattr(self.client, name, getattr(self.publisher, f"_{name}"))
        self.publisher._client = self.client  # type: ignore[assignment]

    def add(self, count: int) -> list[str]:
        ids = [f"e{len(self.broker.sent)}-{n}" for n in range(count)]
        for event_id in ids:
            self.outbox.append("cam", event_id, self._render(event_id))
        return ids

    @staticmethod
    def _render(event_id: str) -> Callable[[int], bytes]:
        return lambda seq: json.dumps({"id": event_id, "seq": seq}).encode()

    def events_sent(self) -> list[str]:
        return [json.loads(s.payload)["id"] for s in self.broker.sent if s.topic == EVENTS]

    def pending(self) -> int:
        return self.outbox.stats().pending_events

    def close(self) -> None:
        self.publisher.stop()
        assert self.publisher.join(10)
        self.outbox.close()
        self.client.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Callable[[FakeBroker], Rig]]:
    made: list[Rig] = []

    def make(broker: FakeBroker) -> Rig:
        folder = tmp_path / str(len(made))
        folder.mkdir()
        made.append(Rig(folder, broker))
        return made[-1]

    yield make
    for r in made:
        r.close()


def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.005)


def test_events_go_out_in_outbox_order_and_leave_it_only_on_their_puback(rig: Callable[[FakeBroker], Rig]) -> None:
    acks = threading.Event()
    r = rig(FakeBroker(puback=lambda sent: 0 if acks.is_set() else None))
    ids = r.add(30)  # more than MAX_INFLIGHT (20): the rest waits for room
    r.publisher.start()
    until(lambda: len(r.events_sent()) == 20)
    assert r.events_sent() == ids[:20] and r.pending() == 30, "nothing leaves the outbox before its PUBACK"
    acks.set()
    until(lambda: r.pending() == 0)
    assert r.events_sent() == ids, "every event once, in the outbox's order"
    status = [s for s in r.broker.sent if s.topic.endswith("/status")]
    assert status and all(s.retain for s in status)


def test_a_lost_link_is_reconnected_and_what_was_not_acknowledged_is_sent_again(
        rig: Callable[[FakeBroker], Rig]) -> None:
    acks = threading.Event()
    r = rig(FakeBroker(puback=lambda sent: 0 if acks.is_set() else None))
    ids = r.add(3)
    r.publisher.start()
    until(lambda: len(r.events_sent()) == 3)
    r.client.drop()
    until(lambda: r.broker.connects == 2 and r.publisher.connected)
    acks.set()
    until(lambda: r.pending() == 0)
    assert r.events_sent() == ids + ids, "the un-acked events went out again after the reconnect, in order"
    assert r.publisher.last_error is not None and "network loop" in r.publisher.last_error


def test_an_event_refused_for_good_is_set_aside_and_one_refused_for_now_is_sent_again(
        rig: Callable[[FakeBroker], Rig]) -> None:
    refused_once: set[str] = set()

    def puback(sent: Sent) -> int:
        event = json.loads(sent.payload).get("id", "") if sent.topic == EVENTS else ""
        if event.endswith("-1"):
            return 0x87  # not authorized: can never succeed
        if event.endswith("-2") and event not in refused_once:
            refused_once.add(event)
            return 0x97  # quota exceeded: later
        return 0

    r = rig(FakeBroker(puback=puback))
    ids = r.add(4)
    r.publisher.start()
    until(lambda: r.pending() == 0 and len(r.outbox.dead_letters()) == 1)
    dead = r.outbox.dead_letters()
    assert [d.event_id for d in dead] == [ids[1]] and dead[0].code == 0x87
    assert r.events_sent().count(ids[2]) == 2, "the quota refusal was sent again"
    assert r.events_sent().count(ids[1]) == 1 and r.events_sent().count(ids[3]) == 1


def test_a_refused_connection_is_retried_with_its_reason_and_then_delivers(
        rig: Callable[[FakeBroker], Rig]) -> None:
    broker = FakeBroker(connack=0x86)
    r = rig(broker)
    r.add(2)
    r.publisher.start()
    until(lambda: broker.connects >= 3)
    assert not r.publisher.connected and r.pending() == 2
    assert r.publisher.last_error is not None and "broker refused the connection" in r.publisher.last_error
    broker.connack = 0
    until(lambda: r.pending() == 0)
    assert r.publisher.connected
