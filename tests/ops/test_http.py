"""The ops HTTP server on its own (no daemon): what it answers, and that no client can hold it or its stop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from daemon.metrics import Metrics
from daemon.ops.health import Health
from daemon.ops.http import MAX_CONNECTIONS, MAX_HEAD_BYTES, REQUEST_DEADLINE_S, STOP_TIMEOUT_S, OpsHttpServer
from daemon.ops.probe import probe_health
from daemon.settings import HttpSettings
from tests.support.net import free_port


@pytest.fixture
def server() -> Iterator[OpsHttpServer]:
    metrics = Metrics()
    ops = OpsHttpServer("0.0.0.0", free_port(), metrics, Health(metrics))
    ops.start()
    yield ops
    ops.stop()


def exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"200"),
    (b"HEAD /metrics HTTP/1.0\r\n\r\n", b"200"),
    (b"GET /nothing HTTP/1.1\r\n\r\n", b"404"),
    (b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"405"),
    (b"\xff\x00garbage\r\n\r\n", b"400"),
    (b"GET /healthz HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n", b"431"),
])
def test_each_request_gets_its_answer_and_the_connection_closes(server: OpsHttpServer, request_bytes: bytes,
                                                                 status: bytes) -> None:
    answer = exchange(server.port, request_bytes)
    assert answer.split(b" ", 2)[1] == status, answer[:200]
    assert b"Connection: close" in answer


def test_a_client_that_sends_nothing_is_closed_at_the_request_deadline(server: OpsHttpServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server, not by us
        waited = time.monotonic() - started
    assert REQUEST_DEADLINE_S - 0.5 < waited < REQUEST_DEADLINE_S + 1.5, waited


def test_past_the_cap_the_oldest_connection_gives_way_and_probes_still_answer(server: OpsHttpServer) -> None:
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(MAX_CONNECTIONS + 10)]
    try:
        started = time.monotonic()
        assert exchange(server.port, b"GET /healthz HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200")
        assert time.monotonic() - started < 1.0
        assert idle[0].recv(1) == b"", "the oldest idle connection was closed to make room"
    finally:
        for sock in idle:
            sock.close()


def test_stop_returns_in_time_with_clients_still_connected() -> None:
    metrics = Metrics()
    ops = OpsHttpServer("127.0.0.1", free_port(), metrics, Health(metrics))
    ops.start()
    held = [socket.create_connection(("127.0.0.1", ops.port), timeout=5) for _ in range(20)]
    held[0].sendall(b"GET /metr")  # half a request
    started = time.monotonic()
    ops.stop()
    assert time.monotonic() - started < STOP_TIMEOUT_S
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", ops.port), timeout=1).close()
    for sock in held:
        sock.close()


def test_stop_leaves_no_connection_s_task_unfinished_with_clients_connecting_meanwhile() -> None:
    # A connection accepted while the server closes got its task after the close had listed the tasks to cancel:
    # left pending when the loop closed, it was destroyed mid-read (Python warned "coroutine
    # 'StreamReader.readuntil' was never awaited" at some later garbage collection, in another test)
    metrics = Metrics()
    ops = OpsHttpServer("127.0.0.1", free_port(), metrics, Health(metrics))
    ops.start()
    held: list[socket.socket] = []
    connecting = threading.Event()

    def connect() -> None:
        with contextlib.suppress(OSError):  # until the listener is gone
            while len(held) < 2000:
                held.append(socket.create_connection(("127.0.0.1", ops.port), timeout=5))
                connecting.set()

    clients = threading.Thread(target=connect)
    clients.start()
    assert connecting.wait(5)
    ops.stop()
    clients.join(10)
    assert ops._loop.is_closed()
    assert not asyncio.all_tasks(ops._loop), "a connection's task outlived the loop"
    for sock in held:
        sock.close()


def test_the_healthcheck_asks_a_wildcard_bind_on_loopback(server: OpsHttpServer) -> None:
    healthy, line = probe_health(HttpSettings(host="0.0.0.0", port=server.port))
    assert healthy and "/healthz 200 healthy" in line, line


def test_the_healthcheck_reports_healthy_and_says_why_when_http_is_disabled() -> None:
    healthy, line = probe_health(HttpSettings(enabled=False))
    assert healthy and "LINEWATCH_HTTP__ENABLED=false" in line


def test_a_scrape_stuck_on_the_outbox_holds_up_no_health_probe() -> None:
    """/metrics reads the outbox, whose lock an fsync or a full disk can hold for seconds (here: until released).
    It was rendered on the server's only thread, so every probe waited behind it."""
    import threading

    from daemon.metrics import OutboxDepth

    held = threading.Event()

    def outbox_depth() -> OutboxDepth:  # stands for Outbox.stats() waiting on the outbox's lock
        held.wait(10)
        return OutboxDepth(0, 0, None)

    metrics = Metrics()
    metrics.observe_outbox(outbox_depth)
    ops = OpsHttpServer("127.0.0.1", free_port(), metrics, Health(metrics))
    ops.start()
    scrape = threading.Thread(target=exchange, args=(ops.port, b"GET /metrics HTTP/1.1\r\n\r\n"), daemon=True)
    try:
        scrape.start()
        time.sleep(0.2)  # the scrape is now inside the outbox read (nothing to wait on from outside)
        started = time.monotonic()
        assert exchange(ops.port, b"GET /healthz HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200")
        assert time.monotonic() - started < 0.5
    finally:
        held.set()
        scrape.join(5)
        ops.stop()


def test_a_trigger_post_reaches_its_handler_only_when_enabled_and_with_a_bounded_body(server: OpsHttpServer) -> None:
    post = b"POST /cameras/cam1/trigger HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s"
    body = b'{"part_id": "P-7"}'
    # Off unless the composition root set a handler (LINEWATCH_HTTP__TRIGGERS)
    assert exchange(server.port, post % (len(body), body)).split(b" ", 2)[1] == b"404"
    calls: list[tuple[str, bytes]] = []

    def handler(camera_id: str, data: bytes) -> tuple[int, dict[str, object]]:
        calls.append((camera_id, data))
        return 202, {"job_id": "j"}

    server.on_trigger = handler
    answer = exchange(server.port, post % (len(body), body))
    assert answer.split(b" ", 2)[1] == b"202" and answer.endswith(b'{"job_id": "j"}\n')
    assert calls == [("cam1", body)]
    for request, status in [
        (post % (2000, b"x" * 2000), b"413"),  # beyond MAX_BODY_BYTES: never read
        (b"POST /cameras/cam1/trigger HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"411"),
        (b"POST /cameras/cam1/trigger HTTP/1.1\r\nContent-Length: x\r\n\r\n", b"400"),
        (b"POST /cameras/cam1/trigger HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", b"411"),
        (b"POST /cameras/a/b/trigger HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"404"),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"405"),
    ]:
        assert exchange(server.port, request).split(b" ", 2)[1] == status, request
    assert calls == [("cam1", body)], "refused requests never reach the handler"
    # A body shorter than its Content-Length is held until the deadline, then dropped without a call
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(post % (10, b"abc"))
        assert sock.recv(1) == b""
    assert len(calls) == 1
