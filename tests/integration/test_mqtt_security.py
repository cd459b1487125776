"""Issue 5, broker security: TLS (a test CA made by the test), passwords and ACLs against a real mosquitto.

A TLS failure must be loud (an `mqtt_disconnected` line whose reason says why) and must never fall back to
plaintext: the daemon logs no `mqtt_connected`, and the broker's plain listener sees no connection from it.
"""

from __future__ import annotations

import json
import re
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from daemon.exitcodes import ExitCode
from daemon.topics import defect_topic, status_topic
from tests.support.mosquitto import Mosquitto, TlsListener
from tests.support.procs import DaemonProcess, LogRecord
from tests.support.subscriber import Subscriber
from tests.support.tls import Pki

pytestmark = pytest.mark.integration

CAMERA_ID = "synthetic-line"
CLIENT_ID = f"linewatch-{socket.gethostname()}-{CAMERA_ID}"  # the default: unique per host
DEFECTS = defect_topic("linewatch", CAMERA_ID)
# A short finite line, read losslessly: the run ends by itself once every event is delivered.
FINITE_LINE = "synthetic://line?fps=15&defect_rate=0.6&seed=7001&realtime=false&frames=30"
# A slow live line for runs that only need a process that keeps trying to connect.
IDLE_LINE = "synthetic://line?fps=2&seed=7001"
# Runs that never connect: the graceful stop need not wait 8 s for a broker to take the outbox.
QUICK_STOP = {"LINEWATCH_PIPELINE__SHUTDOWN_TIMEOUT_S": "1"}
# Transport tests, not model tests: a low threshold makes nearly every frame an event, so a short run has
# plenty to deliver (or to be refused).
MANY_EVENTS = {"LINEWATCH_MODEL__CONFIDENCE": "0.1"}
BOOT_S = 120


def produced_ids(daemon: DaemonProcess) -> set[str]:
    return {r["event_id"] for r in daemon.logs if r.get("event") == "defect_event"}


# Mosquitto.start() checks that each listener accepts with one TCP connection; the plain one logs it.
READINESS_PROBES = 1


def plain_connections(broker: Mosquitto) -> int:
    """TCP connections the broker's plain listener accepted (mosquitto logs one line per accept)."""
    return len(re.findall(rf"New connection from \S+ on port {broker.port}\.", broker.log_text()))


def wait_for_log_count(broker: Mosquitto, pattern: str, count: int, timeout: float) -> None:
    """Wait until `count` lines of the broker's log match `pattern` (retries seen from the broker's side)."""
    broker.wait_for_log(rf"(?:{pattern}[\s\S]*?){{{count}}}", timeout)


def tls_env(daemon_env: Callable[..., dict[str, str]], url: str, ca: Path | None, cert: Path | None,
            key: Path | None, **extra: str) -> dict[str, str]:
    files = {"LINEWATCH_MQTT__TLS_CA_FILE": ca, "LINEWATCH_MQTT__TLS_CERT_FILE": cert,
             "LINEWATCH_MQTT__TLS_KEY_FILE": key}
    return daemon_env(IDLE_LINE, url, **{k: str(v) for k, v in files.items() if v is not None}, **extra)


# -- TLS -----------------------------------------------------------------------------------------------------


def test_a_valid_client_certificate_connects_over_tls_and_events_are_delivered(
    pki: Pki,
    mosquitto_factory: Callable[..., Mosquitto],
    subscriber_factory: Callable[..., Subscriber],
    daemon_factory: Callable[..., DaemonProcess],
    daemon_env: Callable[..., dict[str, str]],
) -> None:
    # Given a broker with a plain and a TLS listener that requires client certificates from the test CA
    broker = mosquitto_factory(persistence=True, tls=TlsListener.from_pki(pki))
    sub = subscriber_factory(broker.host, broker.tls_port, [DEFECTS], client_id="tls-consumer", persistent=True,
                             ca_certs=pki.ca_cert, certfile=pki.client_cert, keyfile=pki.client_key)
    # When the daemon runs a finite line over mqtts:// with the CA and a client certificate the CA signed
    env = tls_env(daemon_env, broker.tls_url, pki.ca_cert, pki.client_cert, pki.client_key, **MANY_EVENTS)
    env["LINEWATCH_CAMERA__URL"] = FINITE_LINE
    daemon = daemon_factory(env)
    assert daemon.wait(timeout=BOOT_S + 60) == ExitCode.OK, daemon.describe()
    # Then it connected over TLS and every event arrived there
    connected = daemon.wait_for_event("mqtt_connected", 1)
    assert connected["tls"] is True and connected["broker"].endswith(f":{broker.tls_port}")
    ids = produced_ids(daemon)
    assert ids, "no events produced"
    sub.wait_for(lambda ms: ids <= {m.json()["event_id"] for m in ms}, 30)
    summary = daemon.wait_for_event("shutdown_complete", 1)
    assert summary["published"] == summary["events"] == len(ids)
    print("figures:", json.dumps({"produced": len(ids), "received": len(sub.messages("/defects"))}))
    # And nothing used the plain listener
    assert plain_connections(broker) == READINESS_PROBES, broker.log_text()


@dataclass(frozen=True)
class TlsFailure:
    wrong_host: bool = False  # the broker serves a certificate for wrong.example
    plain_port: bool = False  # mqtts:// aimed at the plain MQTT listener
    wrong_ca: bool = False  # the daemon trusts an unrelated CA
    client_cert: bool = True  # the daemon presents the client certificate
    why: str = ""  # regex the logged reason must match: it says what went wrong
    broker_says: str = ""  # regex of the broker's log line for each failed attempt


TLS_FAILURES = {
    "wrong CA": TlsFailure(
        wrong_ca=True, why=r"certificate verify failed.*not signed by a CA in LINEWATCH_MQTT__TLS_CA_FILE",
        broker_says=r"alert unknown ca"),
    "hostname mismatch": TlsFailure(
        wrong_host=True, why=r"certificate verify failed: IP address mismatch, certificate is not valid for "
        r"'127\.0\.0\.1'", broker_says=r"alert bad certificate"),
    "no client certificate": TlsFailure(
        client_cert=False, why=r"requires a client certificate; set LINEWATCH_MQTT__TLS_CERT_FILE",
        broker_says=r"peer did not return a certificate"),
    "mqtts to the plain port": TlsFailure(
        plain_port=True, why=r"is this port a TLS listener\? mqtts:// needs one",
        broker_says=r"New connection from \S+ on port {plain}\."),
}


@pytest.mark.parametrize("case", TLS_FAILURES.values(), ids=TLS_FAILURES.keys())
def test_a_tls_failure_is_reported_with_its_cause_and_never_falls_back_to_plaintext(
    case: TlsFailure,
    pki: Pki,
    mosquitto_factory: Callable[..., Mosquitto],
    daemon_factory: Callable[..., DaemonProcess],
    daemon_env: Callable[..., dict[str, str]],
) -> None:
    # Given a broker with a plain listener and a TLS listener that requires a client certificate
    broker = mosquitto_factory(tls=TlsListener.from_pki(pki, wrong_host=case.wrong_host))
    port = broker.port if case.plain_port else broker.tls_port
    # When the daemon connects over mqtts:// with the case's flaw
    env = tls_env(daemon_env, f"mqtts://{broker.host}:{port}", pki.wrong_ca_cert if case.wrong_ca else pki.ca_cert,
                  pki.client_cert if case.client_cert else None, pki.client_key if case.client_cert else None,
                  **QUICK_STOP)
    daemon = daemon_factory(env)
    # Then it says why it cannot connect
    failure = daemon.wait_for_event("mqtt_disconnected", BOOT_S)
    assert re.search(case.why, failure["reason"]), failure
    assert failure["level"] == "error" and failure["broker"] == f"{broker.host}:{port}"
    print("reason:", failure["reason"])
    # ... and keeps trying (the broker sees the retries), always over TLS, never connecting
    probes = READINESS_PROBES if case.plain_port else 0
    wait_for_log_count(broker, case.broker_says.format(plain=broker.port), probes + 3, 30)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=20) == ExitCode.OK, daemon.describe()
    events = [r["event"] for r in daemon.logs]
    assert "mqtt_connected" not in events, daemon.describe()
    log = broker.log_text()
    # mosquitto answers every CONNECT it reads with a CONNACK (accepted or refused): none was read at all
    assert f"as {CLIENT_ID}" not in log and "Sending CONNACK" not in log, f"an MQTT CONNECT got through:\n{log}"
    if not case.plain_port:
        assert plain_connections(broker) == READINESS_PROBES, f"fell back to the plain listener:\n{log}"


# -- passwords -----------------------------------------------------------------------------------------------

PASSWORD = "R1ght-pw-for-linewatch"
WRONG_PASSWORD = "wr0ng-Pw-5f3c9e71"  # unique enough that finding it anywhere means it leaked


def test_a_wrong_password_is_reported_with_the_brokers_reason_retried_until_fixed_and_never_logged(
    mosquitto_factory: Callable[..., Mosquitto],
    daemon_factory: Callable[..., DaemonProcess],
    daemon_env: Callable[..., dict[str, str]],
    tmp_path: Path,
) -> None:
    # Given a broker that only admits known users, and the daemon with a wrong password in a secret file
    broker = mosquitto_factory(allow_anonymous=False, users={"linewatch": PASSWORD})
    secret = tmp_path / "mqtt-password"
    secret.write_text(WRONG_PASSWORD + "\n")
    # debug level: the most a log could ever say (paho's packet log included)
    env = daemon_env(IDLE_LINE, broker.url, LINEWATCH_MQTT__USERNAME="linewatch",
                     LINEWATCH_MQTT__PASSWORD_FILE=str(secret), LINEWATCH_LOG__LEVEL="debug", **QUICK_STOP)
    daemon = daemon_factory(env)
    # When it connects, then the error names the reason code the broker sent in its CONNACK, in words
    # (mosquitto 2.0 answers a wrong password with 0x87 "Not authorized", newer ones with 0x86)
    failure = daemon.wait_for_event("mqtt_disconnected", BOOT_S)
    # (mosquitto names a client it refused by its address; the daemon is the only client here)
    code = int(broker.wait_for_log(r"Sending CONNACK to \S+ \(0, (\d+)\)").group(1))
    words = str(ReasonCode(PacketTypes.CONNACK, identifier=code))
    assert code in (0x86, 0x87) and f"broker refused the connection: {words} (code {code})" in failure["reason"]
    # And it keeps retrying: the broker refuses attempt after attempt
    wait_for_log_count(broker, rf"Sending CONNACK to \S+ \(0, {code}\)", 3, 30)
    assert "mqtt_connected" not in [r["event"] for r in daemon.logs]
    # And check-config never shows the password: neither from the file nor from LINEWATCH_MQTT__PASSWORD
    from_env = {k: v for k, v in env.items() if k != "LINEWATCH_MQTT__PASSWORD_FILE"}
    for check_env in (env, {**from_env, "LINEWATCH_MQTT__PASSWORD": WRONG_PASSWORD}):
        check = daemon_factory(check_env, args=("check-config",))
        assert check.wait(timeout=60) == ExitCode.OK, check.describe()
        shown = "\n".join([json.dumps(r) for r in check.logs] + check.non_json_lines + [check.stderr_text()])
        assert '"LINEWATCH_MQTT__PASSWORD":' in shown and WRONG_PASSWORD not in shown, shown
    # When the operator corrects the secret file, the next attempt reads it and gets in
    secret.write_text(PASSWORD + "\n")
    daemon.wait_for_event("mqtt_connected", 30)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=20) == ExitCode.OK, daemon.describe()
    # Then neither password was ever in a log line, on stdout or stderr (at debug level)
    output = [json.dumps(r) for r in daemon.logs] + daemon.non_json_lines + [daemon.stderr_text()]
    assert not [line for line in output if WRONG_PASSWORD in line or PASSWORD in line]


# -- ACL -----------------------------------------------------------------------------------------------------

READER_PASSWORD = "reader-pw-1"


def test_an_acl_refusal_of_the_events_topic_is_kept_as_dead_letters_not_retried_forever(
    mosquitto_factory: Callable[..., Mosquitto],
    subscriber_factory: Callable[..., Subscriber],
    daemon_factory: Callable[..., DaemonProcess],
    daemon_env: Callable[..., dict[str, str]],
    tmp_path: Path,
) -> None:
    # Given an ACL that lets the daemon's user write its status and availability but not its events topic
    acl = (
        "user linewatch\n"
        f"topic readwrite {status_topic('linewatch', CAMERA_ID)}\n"
        "topic readwrite linewatch/_daemon/#\n"
        "user reader\n"
        "topic read linewatch/#\n"
    )
    broker = mosquitto_factory(allow_anonymous=False, users={"linewatch": PASSWORD, "reader": READER_PASSWORD},
                               acl=acl)
    sub = subscriber_factory(broker.host, broker.port, ["linewatch/#"], username="reader", password=READER_PASSWORD)
    secret = tmp_path / "mqtt-password"
    secret.write_text(PASSWORD)
    # When the daemon (MQTT 5) runs a finite line
    env = daemon_env(FINITE_LINE, broker.url, LINEWATCH_MQTT__USERNAME="linewatch",
                     LINEWATCH_MQTT__PASSWORD_FILE=str(secret), **MANY_EVENTS)
    daemon = daemon_factory(env)
    assert daemon.wait(timeout=BOOT_S + 60) == ExitCode.OK, daemon.describe()
    # Then each event the broker refused (PUBACK 0x87 Not authorized) is logged, counted and kept aside, not retried
    refused = [r for r in daemon.logs if r.get("event") == "mqtt_publish_refused"]
    ids = produced_ids(daemon)
    assert ids, "no events produced"
    assert len(refused) == len(ids)
    assert all(r["code"] == "0x87" and "authori" in r["reason"].lower() for r in refused), refused[:3]
    summary: LogRecord = daemon.wait_for_event("shutdown_complete", 1)
    assert summary["refused"] == len(ids) and summary["published"] == 0 and summary["outbox_pending"] == 0
    assert summary["dead_letters"] == len(ids), "refused events are kept as dead letters, not deleted"
    # ... and the broker denied each event exactly once: nothing was re-sent after its refusal
    assert len(re.findall(rf"Denied PUBLISH from {CLIENT_ID}", broker.log_text())) == len(ids)
    # And the reader saw the status (the daemon was connected) but no event got through
    sub.wait_for(lambda ms: any(m.topic.endswith("/status") and m.json()["reason"] == "shutdown" for m in ms), 10)
    assert sub.messages("/defects") == []
    print("figures:", json.dumps({"produced": len(ids), "refused": summary["refused"]}))
