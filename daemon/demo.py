"""`linewatch demo`: the daemon on the synthetic line, printing the defects it publishes over MQTT: one line per new
defect and one per ended track, with the snapshot's file name.

Needs nothing but Python: without LINEWATCH_MQTT__URL it starts an embedded broker on loopback. The daemon
runs as a child process exactly as in production (`python -m daemon run`); this process only subscribes and
prints what really came over MQTT.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from daemon.exitcodes import ExitCode
from daemon.ops.embedded_broker import free_loopback_port

DEFAULT_CAMERA = "synthetic://line?fps=10"


def format_event(event: dict[str, Any], snapshot_file: str | None = None) -> str:
    """One readable line per new defect and per ended track (schema linewatch.defect/3)."""
    box = event["bbox"]
    where = f"at ({box['x1']:.0f},{box['y1']:.0f})-({box['x2']:.0f},{box['y2']:.0f})"
    when = event["captured_at"] if event["type"] == "new" else event["last_seen_at"]
    head = f"{when[11:23]}  {event['camera_id']}  event #{event['seq']:<4}"
    defect = f"defect {event['defect_id'][:8]}"
    if event["type"] == "new":
        picture = f"  snapshot {snapshot_file}" if snapshot_file else ""
        return (f"{head} NEW  {defect} {event['label']} {event['confidence']:.2f} {where} frame {event['frame_seq']}"
                f"  [seen {event['frames_seen']} frames]{picture}")
    return (f"{head} END  {defect} {event['label']} best {event['confidence']:.2f} frames "
            f"{event['first_frame_seq']}-{event['last_frame_seq']} ({event['frames_seen']} seen, "
            f"{event['end_reason']})")


class EventPrinter:
    """Subscribes like a line's MES would and prints what arrives; snapshots are saved as files."""

    def __init__(self, url: str, prefix: str, snapshot_dir: Path | None) -> None:
        from daemon.settings import broker_address

        self._host, self._port, _ = broker_address(url)
        self._prefix = prefix
        self._snapshot_dir = snapshot_dir
        self.events = 0
        self._last_status: dict[str, tuple[str, str]] = {}
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"linewatch-demo-{os.getpid()}")
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message

    def start(self) -> None:
        self._client.connect_async(self._host, self._port)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: paho.Client, _: Any, __: Any, reason: Any, ___: Any) -> None:
        topics = [(f"{self._prefix}/+/defects", 1), (f"{self._prefix}/+/status", 1)]
        if self._snapshot_dir is not None:
            topics.append((f"{self._prefix}/+/snapshots/#", 1))
        client.subscribe(topics)

    def _snapshot_file(self, snapshot: dict[str, Any] | None) -> str | None:
        if self._snapshot_dir is None or not snapshot:
            return None
        views = [view for view in ("frame", "crop") if view in snapshot]
        return ", ".join(str(self._snapshot_dir / f"{snapshot['id']}-{view}.jpg") for view in views) or None

    def _on_message(self, _: paho.Client, __: Any, message: paho.MQTTMessage) -> None:
        if "/snapshots/" in message.topic and self._snapshot_dir is not None:
            snapshot_id, view = message.topic.rsplit("/", 2)[-2:]
            (self._snapshot_dir / f"{snapshot_id}-{view}.jpg").write_bytes(message.payload)
            return
        try:
            body = json.loads(message.payload)
        except ValueError:
            return
        if message.topic.endswith("/defects"):
            self.events += 1
            print(format_event(body, self._snapshot_file(body.get("snapshot"))), flush=True)
            return
        camera, state = str(body.get("camera_id")), (str(body.get("state")), str(body.get("reason")))
        if self._last_status.get(camera) != state:  # a retained copy or a repeat is not news
            self._last_status[camera] = state
            print(f"status  {camera}: {state[0]} ({state[1]})", flush=True)


def _stop_child(child: subprocess.Popen[bytes], *, already_signalled: bool) -> int:
    if not already_signalled and child.poll() is None:
        child.send_signal(signal.SIGTERM)
    try:
        return child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        # The signal did not reach it (e.g. SIGINT sent to the demo alone): ask once, then insist.
        child.send_signal(signal.SIGTERM)
        try:
            return child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            return child.wait()


def run_demo(seconds: float, camera_url: str | None) -> int:
    env = dict(os.environ)
    env["LINEWATCH_CAMERA__URL"] = camera_url or env.get("LINEWATCH_CAMERA__URL", DEFAULT_CAMERA)
    env.setdefault("LINEWATCH_LOG__LEVEL", "info")
    env.setdefault("LINEWATCH_LOG__FORMAT", "json")
    env.setdefault("LINEWATCH_SNAPSHOTS__MODE", "frame")
    env.setdefault("LINEWATCH_HTTP__PORT", str(free_loopback_port()))  # a second demo, or a daemon, may hold 9464
    env.setdefault("YOLO_OFFLINE", "1")
    state_dir = tempfile.TemporaryDirectory(prefix="linewatch-demo-")
    env.setdefault("LINEWATCH_OUTBOX__DIR", state_dir.name)
    # Output for people: the daemon's own JSON log goes to a file, the demo prints what arrives over MQTT.
    log_path = Path(tempfile.gettempdir()) / f"linewatch-demo-{os.getpid()}.log"
    snapshot_dir = None
    if env["LINEWATCH_SNAPSHOTS__MODE"] != "off":
        snapshot_dir = Path(tempfile.mkdtemp(prefix="linewatch-demo-snapshots-"))
    broker = None
    if not env.get("LINEWATCH_MQTT__URL"):
        from daemon.logs import configure_logging
        from daemon.ops.embedded_broker import EmbeddedBroker

        configure_logging("warning", "auto")
        broker = EmbeddedBroker()
        broker.start()
        env["LINEWATCH_MQTT__URL"] = broker.url
        env["LINEWATCH_MQTT__PROTOCOL"] = "3.1.1"  # amqtt speaks MQTT 3.1.1 only; mosquitto speaks both
        print(f"demo: no LINEWATCH_MQTT__URL given; started an embedded MQTT broker at {broker.url}", flush=True)
    printer = EventPrinter(env["LINEWATCH_MQTT__URL"], env.get("LINEWATCH_MQTT__TOPIC_PREFIX", "linewatch"),
                           snapshot_dir)
    printer.start()
    print(f"demo: running the daemon on {env['LINEWATCH_CAMERA__URL']}"
          f"{f' for {seconds:g} s' if seconds else ' (Ctrl-C to stop)'}; its log: {log_path}"
          f"{f'; snapshots in {snapshot_dir}' if snapshot_dir else ''}", flush=True)
    with log_path.open("wb") as log_file:
        child = subprocess.Popen([sys.executable, "-m", "daemon", "run"], env=env, stdout=log_file,
                                 stderr=subprocess.STDOUT)
        finished = threading.Event()
        interrupted = False
        try:
            deadline = time.monotonic() + seconds if seconds else float("inf")
            while child.poll() is None and time.monotonic() < deadline:
                finished.wait(min(0.2, max(0.0, deadline - time.monotonic())))
        except KeyboardInterrupt:
            interrupted = True  # Ctrl-C reached the daemon too (same process group); a second signal would force it
        finally:
            code = _stop_child(child, already_signalled=interrupted)
            printer.stop()
            if broker is not None:
                broker.stop()
            state_dir.cleanup()
    print(f"demo: daemon exited with code {code}; {printer.events} defect events received over MQTT", flush=True)
    return code if code >= 0 else int(ExitCode.INTERNAL)
