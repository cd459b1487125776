"""The publisher is woken by the outbox's commit: an event goes to the broker at once, not at the next poll.

Before, the publisher found new outbox rows by polling once per paho loop pass (50 ms): every event waited
up to 50 ms in a committed outbox. Here the idle wait and paho's loop timeout are both stretched to 30 s, so
a publisher that polls would hold each event for up to 30 s; the events must reach a real mosquitto
subscriber far sooner, each within a 3 s deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.frames import ModelInfo
from daemon.outbox import Outbox, OutboxLimits
from daemon.publish import mqtt as publisher_module
from daemon.publish.mqtt import MqttPublisher
from daemon.settings.mqtt import MqttSettings
from daemon.topics import availability_topic
from tests.support.mosquitto import Mosquitto
from tests.support.subscriber import Subscriber

pytestmark = pytest.mark.integration

_STRETCHED_S = 30.0
_DEADLINE_S = 3.0


def test_a_committed_event_is_published_at_once_not_at_the_next_poll(
        mosquitto: Mosquitto, subscriber_factory: Callable[..., Subscriber], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publisher_module, "_IDLE_S", _STRETCHED_S)
    monkeypatch.setattr(publisher_module, "_LOOP_TIMEOUT_S", _STRETCHED_S)
    subscriber = subscriber_factory("127.0.0.1", mosquitto.port, "wake/#")
    outbox = Outbox(tmp_path / "outbox.db", OutboxLimits(max_bytes=1 << 20, max_age_s=3600.0))
    stop = threading.Event()
    model = ModelInfo("m", "0" * 64, 320, "cpu", ("scratch",))
    publisher = MqttPublisher(MqttSettings(url=mosquitto.url, topic_prefix="wake"), "wake-test", ["cam"], model,
                              outbox, stop)
    publisher.start()
    try:
        subscriber.wait_for(lambda msgs: any(m.topic == availability_topic("wake", "wake-test") for m in msgs),
                            timeout=20)
        for index in range(3):
            started = time.monotonic()
            outbox.append("cam", f"event-{index}", lambda seq: b'{"n": %d}' % seq)
            subscriber.wait_for_count(index + 1, timeout=_DEADLINE_S, topic_suffix="/defects")
            assert time.monotonic() - started < _DEADLINE_S  # the wait above raised otherwise; stated for clarity
    finally:
        stop.set()
        publisher.stop()
        left = publisher.join(10)
        outbox.close()
    assert left, "the publisher left within its deadline"
