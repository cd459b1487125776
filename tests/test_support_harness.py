"""The test harness works against the real things it stands in for.

If these fail, an integration test failing says nothing about the daemon.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.support.hostile import DEFAULT_GARBAGE, BlackHole, GarbageServer
from tests.support.mosquitto import Mosquitto, TlsListener
from tests.support.net import free_port, wait_port
from tests.support.procs import DaemonProcess, fd_count, thread_count
from tests.support.publisher import publish, publish_many
from tests.support.rtsp import RtspServer
from tests.support.subscriber import Subscriber
from tests.support.tls import Pki

MosquittoFactory = Callable[..., Mosquitto]
SubscriberFactory = Callable[..., Subscriber]
RtspFactory = Callable[..., RtspServer]

# Short analysis so OpenCV opens a stream in <1 s instead of ~3 s.
OPENCV_RTSP_OPTIONS = "rtsp_transport;tcp|analyzeduration;500000"


def _publish(broker: Mosquitto, topic: str, payload: bytes) -> None:
    publish(broker.host, broker.port, topic, payload)


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# -- net ---------------------------------------------------------------------


def test_wait_port_times_out_on_a_closed_port() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        wait_port("127.0.0.1", port, deadline_s=0.3)
    assert time.monotonic() - started < 2


# -- mosquitto + subscriber ----------------------------------------------------


@pytest.mark.integration
def test_persistent_session_receives_messages_queued_across_broker_restart(
    mosquitto: Mosquitto, subscriber_factory: SubscriberFactory
) -> None:
    # Given a persistent subscriber that received one message and went away
    sub = subscriber_factory(mosquitto.host, mosquitto.port, "lw/#", client_id="probe", persistent=True)
    _publish(mosquitto, "lw/a", b'{"n": 1}')
    assert sub.wait_for_count(1, timeout=5)[0].json() == {"n": 1}
    sub.close()
    # When a message is published while it is away and the broker restarts
    _publish(mosquitto, "lw/b", b'{"n": 2}')
    port = mosquitto.port
    mosquitto.restart()
    # Then the same client id gets the queued message on the same port
    assert mosquitto.port == port
    back = subscriber_factory(mosquitto.host, mosquitto.port, "lw/#", client_id="probe", persistent=True)
    assert back.session_present is True
    assert back.wait_for_count(1, timeout=5, topic_suffix="/b")[0].payload == b'{"n": 2}'
    assert "Received PUBLISH" in mosquitto.log_text()


@pytest.mark.integration
def test_killed_broker_keeps_what_autosave_wrote(mosquitto: Mosquitto, subscriber_factory: SubscriberFactory) -> None:
    subscriber_factory(mosquitto.host, mosquitto.port, "lw/#", client_id="k", persistent=True).close()
    _publish(mosquitto, "lw/c", b"kept-after-kill")
    mosquitto.wait_persisted(b"kept-after-kill")
    pid = mosquitto.pid
    assert pid is not None
    mosquitto.restart(graceful=False)
    assert _process_gone(pid)
    back = subscriber_factory(mosquitto.host, mosquitto.port, "lw/#", client_id="k", persistent=True)
    assert [m.payload for m in back.wait_for_count(1, timeout=5)] == [b"kept-after-kill"]


@pytest.mark.integration
def test_paused_broker_is_silent_until_resumed(mosquitto: Mosquitto, subscriber_factory: SubscriberFactory) -> None:
    sub = subscriber_factory(mosquitto.host, mosquitto.port, "lw/#")
    mosquitto.pause()
    with socket.create_connection((mosquitto.host, mosquitto.port), timeout=2) as probe:
        # A minimal MQTT 3.1.1 CONNECT; a stopped broker leaves it unanswered.
        probe.sendall(bytes.fromhex("101000044d5154540402003c000470726f6265"))
        probe.settimeout(0.5)
        with pytest.raises(TimeoutError):
            probe.recv(4)
    mosquitto.resume()
    _publish(mosquitto, "lw/after", b"x")
    sub.wait_for_count(1, timeout=5)


@pytest.mark.integration
def test_password_file_and_acl_are_enforced(
    mosquitto_factory: MosquittoFactory, subscriber_factory: SubscriberFactory
) -> None:
    broker = mosquitto_factory(
        allow_anonymous=False,
        users={"reader": "r-pass", "writer": "w-pass"},
        acl="user reader\ntopic read lw/ok/#\n\nuser writer\ntopic write lw/#\n",
    )
    with pytest.raises(AssertionError, match="refused"):
        subscriber_factory(broker.host, broker.port, "lw/#")
    sub = subscriber_factory(broker.host, broker.port, "lw/#", username="reader", password="r-pass")
    # Same publisher connection, denied topic first: if it leaked it would arrive first.
    publish_many(
        broker.host,
        broker.port,
        [("lw/secret", b"no", 1, False), ("lw/ok/x", b"yes", 1, False)],
        username="writer",
        password="w-pass",
    )
    assert [m.payload for m in sub.wait_for_count(1, timeout=5)] == [b"yes"]


# -- TLS -----------------------------------------------------------------------


def _tls_client(*, cafile: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


@pytest.mark.integration
def test_tls_listener_accepts_client_cert_and_refuses_wrong_ca(
    mosquitto_factory: MosquittoFactory, subscriber_factory: SubscriberFactory, pki: Pki
) -> None:
    broker = mosquitto_factory(tls=TlsListener.from_pki(pki))
    # The valid client cert completes an MQTT session over TLS.
    sub = subscriber_factory(
        "127.0.0.1",
        broker.tls_port,
        "lw/#",
        ca_certs=pki.ca_cert,
        certfile=pki.client_cert,
        keyfile=pki.client_key,
    )
    _publish(broker, "lw/tls", b"over-plain")
    assert sub.wait_for_count(1, timeout=5)[0].payload == b"over-plain"

    # A client cert from the unrelated CA is refused in the handshake.
    ctx = _tls_client(cafile=pki.ca_cert, cert=pki.wrong_ca_client_cert, key=pki.wrong_ca_client_key)
    with (
        pytest.raises((ssl.SSLError, ConnectionResetError)),
        socket.create_connection(("127.0.0.1", broker.tls_port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.recv(1)
    # A client trusting only the unrelated CA refuses the broker.
    ctx = _tls_client(cafile=pki.wrong_ca_cert, cert=pki.client_cert, key=pki.client_key)
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        socket.create_connection(("127.0.0.1", broker.tls_port), timeout=5) as raw,
    ):
        ctx.wrap_socket(raw, server_hostname="localhost")


@pytest.mark.integration
def test_wrong_host_cert_fails_hostname_verification(mosquitto_factory: MosquittoFactory, pki: Pki) -> None:
    broker = mosquitto_factory(tls=TlsListener.from_pki(pki, wrong_host=True), plain_listener=False)
    ctx = _tls_client(cafile=pki.ca_cert, cert=pki.client_cert, key=pki.client_key)
    with (
        pytest.raises(ssl.SSLCertVerificationError, match=r"mismatch|match"),
        socket.create_connection(("127.0.0.1", broker.tls_port), timeout=5) as raw,
    ):
        ctx.wrap_socket(raw, server_hostname="127.0.0.1")


# -- RTSP ----------------------------------------------------------------------


def _read_frames(url: str, count: int) -> list[tuple[int, ...]]:
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    try:
        assert cap.isOpened(), f"OpenCV could not open {url}"
        shapes = []
        for _ in range(count):
            ok, frame = cap.read()
            assert ok, f"no frame from {url}"
            shapes.append(tuple(frame.shape))
        return shapes
    finally:
        cap.release()


@pytest.mark.integration
def test_rtsp_serves_requested_size_and_restarts_with_new_size(
    rtsp_factory: RtspFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", OPENCV_RTSP_OPTIONS)
    server = rtsp_factory(width=320, height=240, fps=10)
    url = server.url
    assert _read_frames(url, 3) == [(240, 320, 3)] * 3
    old_pid = server.pid
    assert old_pid is not None

    server.restart(width=416, height=240)

    assert server.url == url
    assert _process_gone(old_pid)
    assert _read_frames(url, 3) == [(240, 416, 3)] * 3


@pytest.mark.integration
def test_rtsp_loops_a_video_file(rtsp_factory: RtspFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a 0.5 s MJPEG clip (decodable by the base/good plugins alone)
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 10, (160, 120))
    for i in range(5):
        frame = np.zeros((120, 160, 3), np.uint8)
        frame[:, i * 32 : (i + 1) * 32] = 255
        writer.write(frame)
    writer.release()
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", OPENCV_RTSP_OPTIONS)
    # When served scaled to 320x240 at 10 fps
    server = rtsp_factory(file=clip, width=320, height=240, fps=10)
    # Then frames keep coming past the clip's end, at the requested size
    assert _read_frames(server.url, 12) == [(240, 320, 3)] * 12


def test_rtsp_server_reports_an_undecodable_file(tmp_path: Path) -> None:
    from tests.support.rtsp import RtspError, rtsp_missing

    if rtsp_missing():
        pytest.skip(str(rtsp_missing()))
    bogus = tmp_path / "not-a-video.mp4"
    bogus.write_bytes(b"nope" * 100)
    with pytest.raises(RtspError, match="exited with 2"):
        RtspServer(file=bogus).start()


# -- hostile servers -------------------------------------------------------------


def test_black_hole_accepts_and_never_answers(black_hole: BlackHole) -> None:
    with socket.create_connection(("127.0.0.1", black_hole.port), timeout=2) as client:
        client.sendall(b"CONNECT?")
        client.settimeout(0.3)
        with pytest.raises(TimeoutError):
            client.recv(1)
        black_hole.wait_for_connections(1, timeout=2)
    assert black_hole.connections_accepted == 1


@pytest.mark.parametrize("close_after_write", [False, True])
def test_garbage_server_sends_garbage(close_after_write: bool) -> None:
    with (
        GarbageServer(close_after_write=close_after_write) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=2) as client,
    ):
        received = b""
        while len(received) < len(DEFAULT_GARBAGE):
            chunk = client.recv(4096)
            assert chunk, "closed before the whole payload arrived"
            received += chunk
        assert received == DEFAULT_GARBAGE
        client.settimeout(0.3)
        if close_after_write:
            assert client.recv(1) == b""
        else:
            with pytest.raises(TimeoutError):
                client.recv(1)
        assert server.connections_accepted == 1


# -- daemon process helper ---------------------------------------------------------


def test_daemon_process_collects_json_logs_and_exit_code() -> None:
    with DaemonProcess({"LINEWATCH_X": "1"}, ["a", "b"], module="tests.support.fake_daemon") as proc:
        started = proc.wait_for_event("started", timeout=10, args=["a", "b"])
        assert started["args"] == ["a", "b"]
        assert thread_count(proc.pid) >= 1
        assert fd_count(proc.pid) >= 3
        mark = proc.mark()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        proc.wait_for_event("shutdown", timeout=1, since=mark)
        assert proc.non_json_lines == ["not json"]
        assert "a warning on stderr" in proc.stderr_text()


def test_daemon_process_wait_for_log_fails_fast_when_it_exits() -> None:
    with DaemonProcess({}, ["--exit-code", "3"], module="tests.support.fake_daemon") as proc:
        started = time.monotonic()
        with pytest.raises(AssertionError, match="exited before"):
            proc.wait_for_event("never", timeout=30)
        assert time.monotonic() - started < 10
        assert proc.wait(timeout=5) == 3


def test_broker_process_is_gone_after_context_exit(tmp_path: Path) -> None:
    from tests.support.mosquitto import mosquitto_missing

    if mosquitto_missing():
        pytest.skip(str(mosquitto_missing()))
    with Mosquitto(tmp_path / "b") as broker:
        pid = broker.pid
        assert pid is not None
        broker.pause()  # stop() must still work on a stopped process
    assert _process_gone(pid)


@pytest.mark.integration
def test_wait_for_treats_index_errors_as_not_yet(mosquitto: Mosquitto, subscriber_factory: SubscriberFactory) -> None:
    sub = subscriber_factory(mosquitto.host, mosquitto.port, "lw/#")
    with pytest.raises(AssertionError, match="IndexError"):
        sub.wait_for(lambda ms: ms[-1].json()["state"] == "x", timeout=0.2)
    publish(mosquitto.host, mosquitto.port, "lw/s", b'{"state": "x"}')
    assert sub.wait_for(lambda ms: ms[-1].json()["state"] == "x", timeout=5)[-1].topic == "lw/s"
