"""End to end against a real mosquitto: a video file in, documented defect events out, status online/offline."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from daemon.exitcodes import ExitCode
from daemon.synthetic.line import CLASS_NAMES
from daemon.topics import availability_topic, status_topic
from tests.integration.payloads import assert_gapless, assert_valid_defect_event, validate_message
from tests.support.mosquitto import Mosquitto
from tests.support.procs import DaemonProcess
from tests.support.subscriber import Subscriber


def test_frames_mode_publishes_one_documented_event_per_frame_and_ends_cleanly(
    mosquitto: Mosquitto,
    run_weights_sha256: str,
    subscriber_factory: Callable[..., Subscriber],
    daemon_factory: Callable[..., DaemonProcess],
    daemon_env: Callable[..., dict[str, str]],
    line_video: Path,
    model_path: Path,
) -> None:
    # Given a subscriber on the events and status topics
    sub = subscriber_factory(mosquitto.host, mosquitto.port, ["linewatch/#"])
    # When the daemon, in the per-frame mode kept for raw detections, reads a whole video file (no pacing: files
    # lose nothing) and reaches its end
    env = daemon_env(str(line_video), mosquitto.url, LINEWATCH_CAMERA__PACE="max", LINEWATCH_EVENTS__MODE="frames")
    daemon = daemon_factory(env)
    assert daemon.wait(timeout=180) == ExitCode.OK, daemon.describe()
    # Then every message is a documented event, numbered 1..N without gaps, one per frame with detections
    # (the clean `offline` is published after the last event was acknowledged, so it arrives last)
    messages = sub.wait_for(lambda ms: any(m.topic.endswith("/status") and m.json()["reason"] == "shutdown"
                                           for m in ms), 20)
    events = [m.json() for m in messages if m.topic.endswith("/defects")]
    assert len(events) >= 5, f"only {len(events)} events from 60 frames with many defects"
    sha = run_weights_sha256
    for event in events:
        assert event["schema"] == "linewatch.frame_defects/1"
        assert_valid_defect_event(event, camera_id="line", model_sha256=sha, width=640, height=480,
                                  labels=set(CLASS_NAMES))
    assert_gapless([e["seq"] for e in events])
    frame_seqs = [e["frame_seq"] for e in events]
    assert len(set(frame_seqs)) == len(frame_seqs), "two events for one frame"
    assert max(frame_seqs) < 60
    assert len({e["event_id"] for e in events}) == len(events)
    summary = daemon.wait_for_event("shutdown_complete", 1)
    assert summary["frames_read"] == 60 and summary["frames_inspected"] == 60 and summary["frames_dropped"] == 0
    assert summary["events"] == summary["published"] == len(events)
    # And the status topic went online, then a clean retained offline
    states = [m.json()["state"] for m in sub.messages("/status")]
    # `connecting` shows first when the broker link is up before the camera opened.
    assert next(s for s in states if s != "connecting") == "online" and states[-1] == "offline", states
    assert daemon.non_json_lines == [], "every stdout line must be JSON"
    assert daemon.stderr_text() == "", "native and library output must be routed into the JSON log"
    camera_lines = [r for r in daemon.logs if r.get("thread", "").split(":")[0] in ("capture", "detect", "events")]
    assert camera_lines and all(r.get("camera_id") == "line" for r in camera_lines)


def test_sigterm_during_a_live_run_exits_0_within_10_s_with_offline_status(
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., Subscriber],
    daemon_factory: Callable[..., DaemonProcess],
    daemon_env: Callable[..., dict[str, str]],
) -> None:
    env = daemon_env("synthetic://line?fps=15", mosquitto.url)
    daemon = daemon_factory(env)
    sub = subscriber_factory(mosquitto.host, mosquitto.port, [status_topic("linewatch", "synthetic-line")])
    daemon.wait_for_event("daemon_ready", 120)
    sub.wait_for(lambda ms: any(m.json()["state"] == "online" for m in ms), 20)
    daemon.wait_for_event("defect_event", 60)  # mid-run: frames are flowing and events are being published
    sent = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    code = daemon.wait(timeout=10)
    took = time.monotonic() - sent
    assert code == ExitCode.OK, daemon.describe()
    assert took < 10
    last = sub.wait_for(lambda ms: ms[-1].json()["state"] == "offline", 5)[-1]
    assert last.json()["reason"] == "shutdown"
    # The offline status is retained: a subscriber arriving later still learns the station is down.
    late = subscriber_factory(mosquitto.host, mosquitto.port, [status_topic("linewatch", "synthetic-line")])
    retained = late.wait_for(lambda ms: len(ms) >= 1, 5)[0]
    assert retained.retain and retained.json()["state"] == "offline"


def test_the_last_will_marks_the_daemon_unavailable_when_it_dies(
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., Subscriber],
    daemon_factory: Callable[..., DaemonProcess],
    daemon_env: Callable[..., dict[str, str]],
) -> None:
    # One connection has one will: it is the daemon's availability; each camera's status stays as last retained.
    env = daemon_env("synthetic://line?fps=5", mosquitto.url, LINEWATCH_MQTT__KEEPALIVE_S="5")
    daemon = daemon_factory(env)
    topic = availability_topic("linewatch", f"linewatch-{socket.gethostname()}-synthetic-line")
    sub = subscriber_factory(mosquitto.host, mosquitto.port, [topic, status_topic("linewatch", "synthetic-line")])
    sub.wait_for(lambda ms: any(m.topic == topic and m.json()["state"] == "online" for m in ms), 120)
    sub.wait_for(lambda ms: any(m.topic.endswith("/status") and m.json()["state"] == "online" for m in ms), 20)
    daemon.kill()
    will = sub.wait_for(lambda ms: ms[-1].topic == topic and ms[-1].json()["state"] == "offline", 15)[-1]
    assert will.json()["reason"] == "connection_lost" and will.json()["cameras"] == ["synthetic-line"]
    validate_message(will.topic, will.payload)


def test_a_second_sigint_forces_the_exit_while_a_graceful_stop_waits_for_the_broker(
    daemon_factory: Callable[..., DaemonProcess],
    daemon_env: Callable[..., dict[str, str]],
) -> None:
    # Given a broker that is down, so a graceful stop would spend its deadline trying to deliver
    from tests.support.net import free_port

    env = daemon_env("synthetic://line?fps=15", f"mqtt://127.0.0.1:{free_port()}",
                     LINEWATCH_PIPELINE__SHUTDOWN_TIMEOUT_S="60")
    daemon = daemon_factory(env)
    daemon.wait_for_event("daemon_ready", 120)
    daemon.send_signal(signal.SIGINT)
    daemon.wait_for_event("shutdown_requested", 10)
    daemon.wait_for_event("shutdown_started", 10)
    # When the operator presses Ctrl-C again
    daemon.send_signal(signal.SIGINT)
    # Then the process exits at once with the documented code instead of waiting 60 s
    assert daemon.wait(timeout=5) == ExitCode.FORCED, daemon.describe()
