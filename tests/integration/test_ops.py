"""Health, readiness, metrics and sd_notify on a running daemon (issue 8, section 2), against real services."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from daemon.exitcodes import ExitCode
from tests.integration.ops_helpers import NotifySocket, http_get, probe, wait_probe
from tests.support.hostile import SlowClients
from tests.support.mosquitto import Mosquitto
from tests.support.net import free_port
from tests.support.procs import REPO_ROOT, DaemonProcess
from tests.support.rtsp import RtspServer

pytestmark = pytest.mark.integration

EnvFactory = Callable[..., dict[str, str]]
BOOT_S = 120.0


def ops_env(daemon_env: EnvFactory, camera: str, broker: str, port: int, **extra: str) -> dict[str, str]:
    return daemon_env(camera, broker, LINEWATCH_HTTP__PORT=str(port), LINEWATCH_HTTP__HOST="127.0.0.1", **extra)


def is_ready(code: int, body: dict[str, object]) -> bool:
    return code == 200


@contextmanager
def outbox_locked(state_dir: Path) -> Iterator[None]:
    """Another process holding the outbox's write lock: the event stage's commits cannot finish."""
    conn = sqlite3.connect(state_dir / "outbox.sqlite3", timeout=10, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def test_readyz_is_503_until_warm_up_then_200_and_metrics_pass_promtool(
    mosquitto: Mosquitto, daemon_factory: Callable[..., DaemonProcess], daemon_env: EnvFactory, model_path: Path,
    run_weights_sha256: str,
) -> None:
    port = free_port()
    env = ops_env(daemon_env, "synthetic://line?fps=15&defect_rate=0.8", mosquitto.url, port,
                  LINEWATCH_MODEL__WARMUP_RUNS="50")
    daemon = daemon_factory(env)
    daemon.wait_for_event("http_listening", 60)  # logged before the model is even imported
    code, ready = probe(port, "/readyz")
    assert code == 503 and "model not loaded and warmed up yet" in ready["reasons"], ready
    code, live = probe(port, "/healthz")
    assert code == 200 and live["phase"] == "starting", live
    ready = wait_probe(port, "/readyz", is_ready, BOOT_S)
    assert ready["model_ready"] and ready["broker_connected"]
    assert ready["cameras"]["synthetic-line"]["state"] == "online"
    assert daemon.logs.index(daemon.wait_for_event("model_loaded", 1)) < daemon.logs.index(
        daemon.wait_for_event("daemon_ready", 1))
    code, live = probe(port, "/healthz")
    assert code == 200 and set(live["stages"]) == {"publish:mqtt", "events:synthetic-line", "detect",
                                                   "capture:synthetic-line"}
    daemon.wait_for_event("defect_event", 60)
    # /metrics: Prometheus text that promtool accepts, with the camera label and the build info
    code, text = http_get(port, "/metrics")
    assert code == 200
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    body = text.decode()
    for needle in ('linewatch_frames_read_total{camera="synthetic-line"}', "linewatch_inference_seconds_bucket",
                   'linewatch_events_committed_total{camera="synthetic-line"}', "linewatch_outbox_events ",
                   "linewatch_mqtt_connected 1.0", 'linewatch_camera_state{camera="synthetic-line",'
                   'linewatch_camera_state="online"} 1.0', "linewatch_capture_to_commit_seconds_count",
                   "linewatch_ready 1.0", "linewatch_build_info{"):
        assert needle in body, f"{needle!r} not in /metrics"

    assert f'model_sha256="{run_weights_sha256}"' in body
    # shutdown_complete reads the same counters /metrics showed
    scraped = float(next(line.split()[-1] for line in body.splitlines()
                         if line.startswith('linewatch_frames_read_total{camera="synthetic-line"}')))
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(20) == ExitCode.OK
    summary = daemon.wait_for_event("shutdown_complete", 1)
    assert summary["frames_read"] >= scraped > 0


def test_readyz_is_503_while_the_camera_reconnects_and_healthz_stays_200(
    mosquitto: Mosquitto, rtsp_factory: Callable[..., RtspServer], daemon_factory: Callable[..., DaemonProcess],
    daemon_env: EnvFactory, line_video: Path,
) -> None:
    camera = rtsp_factory(file=line_video, width=640, height=480, fps=10)
    port = free_port()
    env = ops_env(daemon_env, camera.url, mosquitto.url, port, LINEWATCH_CAMERA__ID="cam1",
                  LINEWATCH_CAMERA__READ_TIMEOUT_S="2", LINEWATCH_CAMERA__OPEN_TIMEOUT_S="2",
                  LINEWATCH_CAMERA__BACKOFF_MAX_S="2")
    daemon = daemon_factory(env)
    wait_probe(port, "/readyz", is_ready, BOOT_S)
    mark = daemon.mark()
    camera.kill()
    daemon.wait_for_event("camera_state", 15, since=mark, state="reconnecting")
    code, ready = probe(port, "/readyz")
    assert code == 503 and any(r.startswith("camera cam1 is reconnecting") for r in ready["reasons"]), ready
    code, live = probe(port, "/healthz")
    assert code == 200, f"a reconnecting camera is alive: the daemon is doing its job; {live}"
    camera.restart()
    wait_probe(port, "/readyz", is_ready, 30)


def test_a_wedged_stage_turns_healthz_503_and_stops_the_systemd_watchdog_pings(
    mosquitto: Mosquitto, daemon_factory: Callable[..., DaemonProcess], daemon_env: EnvFactory, tmp_path: Path,
) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        port = free_port()
        env = ops_env(daemon_env, "synthetic://line?fps=15&defect_rate=0.8", mosquitto.url, port,
                      LINEWATCH_PIPELINE__WEDGE_TIMEOUT_S="2", NOTIFY_SOCKET=str(notify.path),
                      WATCHDOG_USEC="1000000")  # WatchdogSec=1s: a ping every 0.5 s while live
        daemon = daemon_factory(env)
        ready_at, _ = notify.wait_for(lambda m: m == "READY=1", BOOT_S)
        assert daemon.wait_for_event("model_loaded", 1), "READY=1 only after the model is warmed up"
        _, status = notify.wait_for(lambda m: m.startswith("STATUS="), 15, since=ready_at)
        assert "synthetic-line online" in status and "outbox" in status, status
        notify.wait_for(lambda m: m == "WATCHDOG=1", 5, since=ready_at)
        daemon.wait_for_event("defect_event", 60)
        # When another process holds the outbox's write lock, the event stage cannot commit
        with outbox_locked(Path(env["LINEWATCH_OUTBOX__DIR"])):
            wedged = wait_probe(port, "/healthz", lambda code, body: code == 503, 30)
            noticed = time.monotonic()
            assert wedged["stages"]["events:synthetic-line"]["state"] == "wedged", wedged
            assert any("events:synthetic-line stuck" in r for r in wedged["reasons"]), wedged
            code, ready = probe(port, "/readyz")
            assert code == 503 and "not live (see /healthz)" in ready["reasons"]
            # Then systemd hears no WATCHDOG=1 while the pipeline is wedged (the scenario lasts 3 s)
            end = noticed + 3.0
            while time.monotonic() < end:
                time.sleep(0.1)
            pings = [m for m in notify.between(noticed + 0.6, end) if m == "WATCHDOG=1"]
            assert pings == [], "pinged systemd while wedged"
        # When the lock goes, the stage moves again: live, and the pings resume
        wait_probe(port, "/healthz", lambda code, body: code == 200, 30)
        notify.wait_for(lambda m: m == "WATCHDOG=1", 10, since=time.monotonic())
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == ExitCode.OK, daemon.describe()
        notify.wait_for(lambda m: m == "STOPPING=1", 1)
    finally:
        notify.close()


def run_doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    import os
    import sys

    from tests.support.procs import REPO_ROOT

    clean = {k: v for k, v in os.environ.items() if not k.startswith("LINEWATCH_")}
    return subprocess.run([sys.executable, "-m", "daemon", "doctor", *args], env={**clean, **env}, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=180)


def test_doctor_reports_every_dependency_and_exits_0_when_the_required_ones_work(
    mosquitto: Mosquitto, daemon_env: EnvFactory
) -> None:
    env = daemon_env("synthetic://line", mosquitto.url)
    text = run_doctor(env)
    assert text.returncode == ExitCode.OK, text.stdout + text.stderr
    for name in ("linewatch", "python", "torch", "gpu", "opencv", "ultralytics", "onnxruntime", "model", "camera",
                 "broker", "outbox"):
        assert any(line.split()[1:2] == [name] for line in text.stdout.splitlines()), f"{name} missing:\n{text.stdout}"
    assert "all required checks passed" in text.stdout
    import json

    report = json.loads(run_doctor(env, "--json").stdout)
    assert report["ok"] and report["exit_code"] == 0
    checks = {c["name"]: c for c in report["checks"]}
    assert "FFmpeg YES" in checks["opencv"]["detail"] and "CPUExecutionProvider" in checks["onnxruntime"]["detail"]
    assert checks["model"]["required"] and "sha256" in checks["model"]["detail"]


def test_doctor_exits_3_naming_an_unreachable_camera_and_broker(daemon_env: EnvFactory) -> None:
    import json

    closed = free_port()
    env = daemon_env(f"rtsp://127.0.0.1:{closed}/line", f"mqtt://127.0.0.1:{closed}",
                     LINEWATCH_CAMERA__OPEN_TIMEOUT_S="2", LINEWATCH_CAMERA__READ_TIMEOUT_S="2")
    result = run_doctor(env, "--json")
    assert result.returncode == ExitCode.BOOT, result.stdout + result.stderr
    report = json.loads(result.stdout)
    failed = {c["name"] for c in report["checks"] if not c["ok"]}
    assert failed == {"camera", "broker"}, report
    assert not report["ok"] and report["exit_code"] == ExitCode.BOOT


def test_healthz_answers_within_1_s_and_sigterm_exits_0_with_slow_and_idle_clients_on_the_port(
    mosquitto: Mosquitto, daemon_factory: Callable[..., DaemonProcess], daemon_env: EnvFactory,
) -> None:
    """Before: with 8 clients each sending one byte every 2 s, /healthz answered 0 of 5 probes within 2 s, and
    SIGTERM did not end the daemon within 25 s (the single-threaded server waited on them)."""
    port = free_port()
    daemon = daemon_factory(ops_env(daemon_env, "synthetic://line?fps=10", mosquitto.url, port))
    wait_probe(port, "/readyz", is_ready, BOOT_S)
    # 8 slow-loris clients, 40 idle connections, 8 that ask for /metrics and never read: more than the cap
    with SlowClients("127.0.0.1", port, slow=8, idle=40, deaf=8, interval_s=0.5) as clients:
        time.sleep(3)  # let them do their worst: several of the server's 2 s deadlines go by
        took = []
        for _ in range(10):
            started = time.monotonic()
            code, _ = http_get(port, "/healthz", timeout=5)
            took.append(time.monotonic() - started)
            assert code == 200
        assert max(took) < 1.0, f"/healthz took {max(took):.3f} s with hostile clients on the port"
        assert clients.connects > 56, "the server closed and the clients came back"
        # And a stop is not held up by them
        started = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == ExitCode.OK, daemon.describe()
        stop_s = time.monotonic() - started
    assert stop_s < 8.0 + 5.0, f"SIGTERM to exit took {stop_s:.1f} s (deadline: SHUTDOWN_TIMEOUT_S + 5 s)"


def healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command, with the daemon's own environment (as Docker runs it)."""
    return subprocess.run([sys.executable, "-m", "daemon", "healthcheck", "--path", "/healthz"], env=env,
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)


def test_the_container_healthcheck_asks_where_the_daemon_listens_and_says_when_http_is_off(
    mosquitto: Mosquitto, daemon_factory: Callable[..., DaemonProcess], daemon_env: EnvFactory,
) -> None:
    port = free_port()
    env = daemon_env("synthetic://line?fps=10", mosquitto.url, LINEWATCH_HTTP__HOST="127.0.0.2",
                     LINEWATCH_HTTP__PORT=str(port))
    daemon = daemon_factory(env)
    daemon.wait_for_event("daemon_ready", BOOT_S)
    full = {**os.environ, **env}
    answer = healthcheck(full)
    assert answer.returncode == 0 and "/healthz 200 healthy" in answer.stdout, answer.stdout + answer.stderr
    off = healthcheck({**full, "LINEWATCH_HTTP__ENABLED": "false"})
    assert off.returncode == 0 and "LINEWATCH_HTTP__ENABLED=false" in off.stdout, off.stdout + off.stderr
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == ExitCode.OK, daemon.describe()
    gone = healthcheck(full)
    assert gone.returncode == 1 and "unreachable" in gone.stdout, gone.stdout + gone.stderr
