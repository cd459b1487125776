"""A real RTSP camera (GStreamer's RTSP server on loopback) read through OpenCV/FFmpeg, published over MQTT."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from daemon.exitcodes import ExitCode
from daemon.synthetic.line import CLASS_NAMES
from tests.integration.payloads import assert_gapless, assert_valid_defect_event
from tests.support.mosquitto import Mosquitto
from tests.support.procs import DaemonProcess
from tests.support.rtsp import RtspServer
from tests.support.subscriber import Subscriber


def test_the_daemon_reads_an_rtsp_stream_and_publishes_its_defects(
    mosquitto: Mosquitto,
    run_weights_sha256: str,
    rtsp_factory: Callable[..., RtspServer],
    subscriber_factory: Callable[..., Subscriber],
    daemon_factory: Callable[..., DaemonProcess],
    daemon_env: Callable[..., dict[str, str]],
    line_video: Path,
    model_path: Path,
) -> None:
    camera = rtsp_factory(file=line_video, width=640, height=480, fps=10)
    sub = subscriber_factory(mosquitto.host, mosquitto.port, ["linewatch/cam1/#"])
    env = daemon_env(camera.url, mosquitto.url, LINEWATCH_CAMERA__ID="cam1")
    daemon = daemon_factory(env)
    online = daemon.wait_for_event("camera_state", 120, state="online")
    assert "rtsp" in online["source"]
    messages = sub.wait_for(lambda ms: sum(m.topic.endswith("/defects") for m in ms) >= 3, 90)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=10) == ExitCode.OK, daemon.describe()
    events = [m.json() for m in sub.messages("/defects")]
    sha = run_weights_sha256
    for event in events:
        assert_valid_defect_event(event, camera_id="cam1", model_sha256=sha, width=640, height=480,
                                  labels=set(CLASS_NAMES))
    assert_gapless([e["seq"] for e in events])
    assert messages[0].topic == "linewatch/cam1/status"
