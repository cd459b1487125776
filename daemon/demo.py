"""`linewatch demo`: the daemon on the synthetic line, printing the defect events it publishes over MQTT.

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
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from daemon.exitcodes import ExitCode

DEFAULT_CAMERA = "synthetic://line?fps=10"


def format_event(event: dict[str, Any]) -> str:
    """One readable line per defect event."""
    found = "; ".join(
        f"{d['label']} {d['confidence']:.2f} at ({d['bbox']['x1']:.0f},{d['bbox']['y1']:.0f})"
        f"-({d['bbox']['x2']:.0f},{d['bbox']['y2']:.0f})"
        for d in event["detections"]
    )
    return (
        f"{event['captured_at'][11:23]}  {event['camera_id']}  event #{event['seq']:<4} frame {event['frame_seq']:<5}"
        f" {found}  [inference {event['latency_ms']['inference']:.0f} ms, total {event['latency_ms']['total']:.0f} ms]"
    )


class EventPrinter:
    def __init__(self, url: str, prefix: str) -> None:
        from daemon.settings import broker_address

        self._host, self._port, _ = broker_address(url)
        self._prefix = prefix
        self.events = 0
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
        client.subscribe([(f"{self._prefix}/+/defects", 1), (f"{self._prefix}/+/status", 1)])

    def _on_message(self, _: paho.Client, __: Any, message: paho.MQTTMessage) -> None:
        try:
            body = json.loads(message.payload)
        except ValueError:
            return
        if message.topic.endswith("/defects"):
            self.events += 1
            print(format_event(body), flush=True)
        else:
            print(f"status  {body.get('camera_id')}: {body.get('state')} ({body.get('reason')})", flush=True)


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
    env.setdefault("LINEWATCH_LOG__LEVEL", "warning")  # the daemon's own log: problems only
    env.setdefault("YOLO_OFFLINE", "1")
    state_dir = tempfile.TemporaryDirectory(prefix="linewatch-demo-")
    env.setdefault("LINEWATCH_OUTBOX__DIR", state_dir.name)
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
    printer = EventPrinter(env["LINEWATCH_MQTT__URL"], env.get("LINEWATCH_MQTT__TOPIC_PREFIX", "linewatch"))
    printer.start()
    print(f"demo: running the daemon on {env['LINEWATCH_CAMERA__URL']}"
          f"{f' for {seconds:g} s' if seconds else ' (Ctrl-C to stop)'}", flush=True)
    child = subprocess.Popen([sys.executable, "-m", "daemon", "run"], env=env)
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
