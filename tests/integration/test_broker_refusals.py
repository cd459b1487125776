"""A broker that refuses events: a transient refusal is retried, a permanent one is kept as a dead letter.
Never is an event deleted on a refusal (before: every MQTT 5 reason code of 0x80 and above deleted it).

The broker is a real mosquitto behind a proxy that answers the PUBLISHes the test picks with the reason code it
picks (tests/support/refusing_broker.py), as EMQX or HiveMQ do when they rate-limit (0x97) or refuse (0x87)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable

import pytest

from daemon.exitcodes import ExitCode
from tests.support.mosquitto import Mosquitto
from tests.support.procs import REPO_ROOT, DaemonProcess
from tests.support.refusing_broker import RefusingBroker
from tests.support.subscriber import Subscriber

pytestmark = pytest.mark.integration

FINITE = "synthetic://line?frames=40&defect_rate=1&realtime=false&seed=5"


def delivered_seqs(sub: Subscriber) -> list[int]:
    return sorted(m.json()["seq"] for m in sub.messages("/defects"))


def run_to_the_end(daemon_factory: Callable[..., DaemonProcess], env: dict[str, str]) -> dict[str, object]:
    daemon = daemon_factory(env)
    assert daemon.wait(180) == ExitCode.OK, daemon.describe()
    summary: dict[str, object] = daemon.wait_for_event("shutdown_complete", 1)
    summary["logs"] = daemon.logs
    return summary


def test_transient_refusals_are_sent_again_after_a_backoff_and_nothing_is_lost(
    mosquitto: Mosquitto, subscriber_factory: Callable[..., Subscriber],
    daemon_factory: Callable[..., DaemonProcess], daemon_env: Callable[..., dict[str, str]],
) -> None:
    codes = [0x97, 0x97, 0x80, 0x83, 0x91]  # quota exceeded (twice), unspecified, implementation specific, id in use
    def first_five(topic: str, index: int, payload: bytes) -> int | None:
        return codes[index] if index < len(codes) else None

    with RefusingBroker(mosquitto.port, first_five) as broker:
        sub = subscriber_factory(mosquitto.host, mosquitto.port, ["linewatch/+/defects"])
        env = daemon_env(FINITE, broker.url, LINEWATCH_EVENTS__MODE="frames", LINEWATCH_MQTT__RECONNECT_MAX_S="1")
        summary = run_to_the_end(daemon_factory, env)
        events = int(summary["events"])  # type: ignore[call-overload]
        assert events >= 10 and len(broker.refused) == len(codes)
        seqs = sub.wait_for(lambda ms: len(ms) >= events, 10)
    # Then every event arrived exactly once, the refused ones included
    assert sorted(m.json()["seq"] for m in seqs) == list(range(1, events + 1))
    assert summary["retried"] == len(codes) and summary["dead_letters"] == 0 and summary["outbox_pending"] == 0
    deferred = [r for r in summary["logs"] if r.get("event") == "mqtt_publish_deferred"]  # type: ignore[union-attr]
    assert deferred and deferred[0]["code"] == "0x97" and deferred[0]["level"] == "warning"


def dead_letters(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", "dead-letters", *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)


def test_a_permanent_refusal_keeps_the_event_as_a_dead_letter_that_can_be_sent_again(
    mosquitto: Mosquitto, subscriber_factory: Callable[..., Subscriber],
    daemon_factory: Callable[..., DaemonProcess], daemon_env: Callable[..., dict[str, str]],
) -> None:
    refuse = {2: 0x87, 4: 0x90}  # not authorized, topic name invalid: no retry can cure them
    with RefusingBroker(mosquitto.port, lambda topic, index, payload: refuse.get(index)) as broker:
        sub = subscriber_factory(mosquitto.host, mosquitto.port, ["linewatch/#"])
        env = daemon_env(FINITE, broker.url, LINEWATCH_EVENTS__MODE="frames")
        summary = run_to_the_end(daemon_factory, env)
        events = int(summary["events"])  # type: ignore[call-overload]
        sub.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("/defects")]) >= events - 2, 10)
        # Then the two refused events are not delivered, not deleted: kept aside, counted, in the status
        missing = sorted(set(range(1, events + 1)) - set(delivered_seqs(sub)))
        assert len(missing) == 2 and summary["dead_letters"] == 2 and summary["refused"] == 2, (missing, broker.refused)
        statuses = [m.json() for m in sub.messages("/status")]
        assert any(s.get("dead_letters") == 2 and "dead_letters" in s["degraded"] for s in statuses)
        listed = dead_letters({**env, "PATH": "/usr/bin:/bin"}, "--json")
        assert listed.returncode == 0, listed.stderr
        letters = json.loads(listed.stdout)
        assert sorted(letter["seq"] for letter in letters) == missing
        assert sorted(letter["code"] for letter in letters) == [0x87, 0x90]
        assert {letter["output"] for letter in letters} == {"mqtt"}
        # When the cause is fixed and they are put back in the queue, the next run sends them
        broker.decide = lambda topic, index, payload: None
        requeued = dead_letters({**env, "PATH": "/usr/bin:/bin"}, "--requeue")
        assert requeued.returncode == 0 and requeued.stdout.startswith("2 dead letters back"), requeued
        again = daemon_factory({**env, "LINEWATCH_CAMERA__URL": "synthetic://line?frames=1&realtime=false"})
        again.wait_for_event("daemon_ready", 120)
        sub.wait_for(lambda ms: set(range(1, events + 1)) <= {m.json()["seq"] for m in ms
                                                               if m.topic.endswith("/defects")}, 60)
        again.send_signal(signal.SIGTERM)
        assert again.wait(30) == ExitCode.OK, again.describe()
        assert json.loads(dead_letters({**env, "PATH": "/usr/bin:/bin"}, "--json").stdout) == []


def test_an_event_larger_than_the_brokers_maximum_packet_size_is_a_dead_letter_not_a_reconnect_loop(
    mosquitto_factory: Callable[..., Mosquitto], subscriber_factory: Callable[..., Subscriber],
    daemon_factory: Callable[..., DaemonProcess], daemon_env: Callable[..., dict[str, str]],
) -> None:
    """A broker with a packet limit answers an oversized PUBLISH with DISCONNECT 0x95; the client re-sent it after
    every reconnect, and nothing behind it was ever delivered. The limit is in the broker's CONNACK."""
    broker = mosquitto_factory(extra_config="max_packet_size 8192\n")
    sub = subscriber_factory(broker.host, broker.port, ["linewatch/#"])
    env = daemon_env("synthetic://line?frames=150&defect_rate=1&realtime=false&seed=3", broker.url,
                     LINEWATCH_SNAPSHOTS__MODE="frame")  # full-frame JPEGs: tens of kB each
    summary = run_to_the_end(daemon_factory, env)
    logs = summary["logs"]
    refused = [r for r in logs if r.get("event") == "mqtt_publish_refused"]  # type: ignore[union-attr]
    assert refused and {r["code"] for r in refused} == {"0x95"} and {r["kind"] for r in refused} == {"snapshot"}
    assert len([r for r in logs if r.get("event") == "mqtt_connected"]) == 1, "the link never dropped"  # type: ignore[union-attr]
    # Then the defect events all went through, and the pictures wait as dead letters
    events = int(summary["events"])  # type: ignore[call-overload]
    sub.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("/defects")]) >= events, 10)
    assert delivered_seqs(sub) == list(range(1, events + 1))
    assert summary["dead_letters"] == len(refused) and summary["outbox_pending"] == 0


def test_an_event_refused_for_now_ten_times_in_a_row_is_kept_as_a_dead_letter_and_the_queue_goes_on(
    mosquitto: Mosquitto, subscriber_factory: Callable[..., Subscriber],
    daemon_factory: Callable[..., DaemonProcess], daemon_env: Callable[..., dict[str, str]],
) -> None:
    """A broker plugin that turns down one event's content with 0x83 (implementation specific) every time: a
    code that passes, so it is retried, but not for ever: the events behind it wait while it is retried."""
    with RefusingBroker(mosquitto.port, lambda topic, index, payload:
                        0x83 if json.loads(payload)["seq"] == 3 else None) as broker:
        sub = subscriber_factory(mosquitto.host, mosquitto.port, ["linewatch/+/defects"])
        # The stream may end before the tenth refusal: the drain at the stop has a deadline long enough for the rest
        # on a loaded machine (the daemon leaves as soon as the outbox is empty).
        env = daemon_env(FINITE, broker.url, LINEWATCH_EVENTS__MODE="frames", LINEWATCH_MQTT__RECONNECT_MIN_S="0.05",
                         LINEWATCH_MQTT__RECONNECT_MAX_S="0.2", LINEWATCH_PIPELINE__SHUTDOWN_TIMEOUT_S="60")
        summary = run_to_the_end(daemon_factory, env)
        events = int(summary["events"])  # type: ignore[call-overload]
        sub.wait_for(lambda ms: len(ms) >= events - 1, 10)
        refusals = [code for _, _, code in broker.refused if code == 0x83]
    assert delivered_seqs(sub) == [seq for seq in range(1, events + 1) if seq != 3]
    assert (len(refusals), summary["dead_letters"], summary["retried"]) == (10, 1, 9)
    refused = [r for r in summary["logs"] if r.get("event") == "mqtt_publish_refused"]  # type: ignore[union-attr]
    assert len(refused) == 1 and refused[0]["code"] == "0x83" and "10 times in a row" in refused[0]["reason"]
