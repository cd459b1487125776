"""No credential is ever printed or published: a table of hostile camera URLs against every output (the log,
stderr, the retained status topics, /readyz, /healthz, /metrics, `doctor`, `check-config` and config errors),
and a camera password kept in a file, read at each connect, against a real RTSP camera that asks for it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from daemon.exitcodes import ExitCode
from daemon.settings import ConfigError, load_settings
from tests.integration.ops_helpers import http_get, wait_probe
from tests.support.mosquitto import Mosquitto
from tests.support.net import free_port
from tests.support.procs import REPO_ROOT, DaemonProcess
from tests.support.rtsp import RtspServer
from tests.support.subscriber import Subscriber

pytestmark = pytest.mark.integration

# camera id -> (URL with {port}, the secrets in it). Every camera points at a closed port, so each one fails to
# connect and says so everywhere, quoting its source.
HOSTILE: dict[str, tuple[str, tuple[str, ...]]] = {
    "at-in-password": ("rtsp://admin:pw1-p@ss@127.0.0.1:{port}/a", ("pw1-p", "pw1-p@ss")),
    "empty-user": ("rtsp://:pw2-secret@127.0.0.1:{port}/b", ("pw2-secret",)),
    "colon-and-slash": ("rtsp://admin:pw3:with/slash@127.0.0.1:{port}/c", ("pw3", "with/slash")),
    "percent-encoded": ("rtsp://admin:pw4%40enc@127.0.0.1:{port}/d", ("pw4",)),
    "query-secrets": ("rtsp://127.0.0.1:{port}/e?user=admin&password=pw5-query&token=pw5-token",
                      ("pw5-query", "pw5-token")),
    "gst-properties": ("gst://rtspsrc location=rtsp://admin:pw6-loc@127.0.0.1:{port}/f user-id=pw6-user "
                       'user-pw="pw6 prop" ! decodebin ! videoconvert ! appsink', ("pw6-loc", "pw6-user", "pw6 prop")),
    "space-in-password": ("rtsp://admin:pw7 has space@127.0.0.1:{port}/g", ("pw7 has space", "pw7")),
    "token-as-user": ("rtsps://pw8-token@127.0.0.1:{port}/h", ("pw8-token",)),
}
SECRETS = [secret for _, secrets in HOSTILE.values() for secret in secrets]


def hostile_env(port: int) -> dict[str, str]:
    env = {}
    for camera_id, (url, _) in HOSTILE.items():
        key = camera_id.upper().replace("-", "_")
        env[f"LINEWATCH_CAMERAS__{key}__URL"] = url.format(port=port)
        env[f"LINEWATCH_CAMERAS__{key}__ID"] = camera_id
        env[f"LINEWATCH_CAMERAS__{key}__OPEN_TIMEOUT_S"] = "2"
        env[f"LINEWATCH_CAMERAS__{key}__BACKOFF_MAX_S"] = "1"
    return env


def assert_no_secret(text: str, where: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"{where} prints {leaked}"


def test_no_hostile_camera_url_leaks_its_credentials_into_any_output(
    mosquitto: Mosquitto, subscriber_factory: Callable[..., Subscriber],
    daemon_factory: Callable[..., DaemonProcess], daemon_env: Callable[..., dict[str, str]],
) -> None:
    closed = free_port()  # nothing listens: every RTSP camera's connect is refused at once
    port = free_port()
    env = daemon_env("unused", mosquitto.url, LINEWATCH_HTTP__PORT=str(port), **hostile_env(closed))
    del env["LINEWATCH_CAMERA__URL"]
    sub = subscriber_factory(mosquitto.host, mosquitto.port, ["linewatch/#"])
    daemon = daemon_factory(env)
    # Given every camera has failed to connect (or, for the pipeline, failed for good) and said so
    sub.wait_for(lambda ms: {m.topic.split("/")[1] for m in ms if m.topic.endswith("/status")
                             and m.json()["state"] in ("reconnecting", "offline")} >= set(HOSTILE), 120)
    ready = wait_probe(port, "/readyz", lambda code, body: len(body.get("cameras", {})) == len(HOSTILE), 30)
    assert all(camera["reason"] for camera in ready["cameras"].values()), ready
    outputs = {path: http_get(port, path)[1].decode() for path in ("/readyz", "/healthz", "/metrics")}
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == ExitCode.OK, daemon.describe()
    # Then no secret is in any of them
    for path, body in outputs.items():
        assert_no_secret(body, path)
    assert_no_secret(json.dumps(daemon.logs) + "\n".join(daemon.non_json_lines), "the log")
    assert_no_secret(daemon.stderr_text(), "stderr")
    for message in sub.messages():
        assert_no_secret(message.payload.decode("utf-8", "replace"), message.topic)
    # And the sources are still told apart: each camera's failure names its (redacted) source
    described = {r["camera_id"]: r.get("source", "") for r in daemon.logs if r.get("event") == "camera_state"}
    assert "rtsp://***@127.0.0.1" in described["at-in-password"], described
    assert "user-pw=***" in json.dumps(daemon.logs), "the pipeline's failure quotes it, redacted"


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": "/usr/bin:/bin", "YOLO_OFFLINE": "1", "HOME": str(Path.home()), **env}
    return subprocess.run([sys.executable, "-m", "daemon", *args], env=clean, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=180)


def test_doctor_and_check_config_print_no_credential(mosquitto: Mosquitto,
                                                     daemon_env: Callable[..., dict[str, str]]) -> None:
    env = daemon_env("unused", mosquitto.url, **hostile_env(free_port()))
    del env["LINEWATCH_CAMERA__URL"]
    checked = run_cli(["check-config"], env)
    assert checked.returncode == ExitCode.OK, checked.stderr
    view = json.loads(checked.stdout)
    assert view["LINEWATCH_CAMERAS__AT_IN_PASSWORD__URL"].startswith("rtsp://***@127.0.0.1:")
    doctor = run_cli(["doctor", "--json"], env)
    assert doctor.returncode == ExitCode.BOOT, doctor.stdout[-2000:]  # no camera answers
    cameras = [c for c in json.loads(doctor.stdout)["checks"] if c["name"].startswith("camera")]
    assert len(cameras) == len(HOSTILE) and not any(c["ok"] for c in cameras)
    for result, what in ((checked, "check-config"), (doctor, "doctor")):
        assert_no_secret(result.stdout + result.stderr, what)


@pytest.mark.parametrize("camera_id", sorted(HOSTILE))
def test_a_config_error_about_a_camera_url_prints_no_credential(camera_id: str, tmp_path: Path) -> None:
    url = HOSTILE[camera_id][0].replace("127.0.0.1:{port}", "")  # no host: an error that quotes the URL
    with pytest.raises(ConfigError) as caught:
        load_settings({"LINEWATCH_CAMERA__URL": url, "LINEWATCH_OUTBOX__DIR": str(tmp_path),
                       "LINEWATCH_CAMERA__FPS": "-1"})
    text = "\n".join(caught.value.problems)
    assert "LINEWATCH_CAMERA__FPS" in text
    assert_no_secret(text, "the config error")


def test_a_camera_password_from_a_file_is_read_at_each_connect(
    mosquitto: Mosquitto, rtsp_factory: Callable[..., RtspServer], daemon_factory: Callable[..., DaemonProcess],
    daemon_env: Callable[..., dict[str, str]], tmp_path: Path,
) -> None:
    password = "p@ss:w/rd %x"  # every character a URL would need escaped
    camera = rtsp_factory(user="inspector", password=password)
    secret = tmp_path / "camera_password"
    secret.write_text("wrong-password\n")
    env = daemon_env(camera.url, mosquitto.url, LINEWATCH_CAMERA__ID="cam1", LINEWATCH_CAMERA__USERNAME="inspector",
                     LINEWATCH_CAMERA__PASSWORD_FILE=str(secret), LINEWATCH_CAMERA__BACKOFF_MAX_S="1")
    daemon = daemon_factory(env)
    # Given the file holds a wrong password: the camera refuses (401) and the daemon retries
    daemon.wait_for_event("camera_state", 120, state="reconnecting")
    # When the secret is corrected in place (a rotated credential)
    secret.write_text(password + "\n")
    # Then the next connect reads it and the camera comes online, with no restart
    online = daemon.wait_for_event("camera_state", 60, state="online")
    logged = json.dumps(daemon.logs) + daemon.stderr_text()
    assert "inspector" not in online["source"] and password not in logged
    assert quote(password, safe="") not in logged, "nor the form FFmpeg is given"
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == ExitCode.OK, daemon.describe()
    assert "wrong-password" not in json.dumps(daemon.logs) + daemon.stderr_text()
