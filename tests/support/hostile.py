"""Misbehaving TCP peers for failure tests: a broker or camera that hangs or talks nonsense.

Each server is one thread in the test process running a selector loop over the
listening socket, the accepted connections and a wake-up socket, so ``stop()``
interrupts it at once instead of waiting out an accept timeout.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import threading
import time
from types import TracebackType
from typing import Any, TypeVar

from tests.support.net import LOOPBACK

# 0xFF is no valid MQTT fixed header (type 15 with non-zero flags) and no RTSP
# status line, so a client cannot mistake the start for a real answer. The rest
# is seeded so a failure reproduces byte for byte.
DEFAULT_GARBAGE = b"\xff\x00" + random.Random(20240601).randbytes(510)

_S = TypeVar("_S", bound="_TcpServer")


class _TcpServer:
    """Accept loop shared by the hostile servers; subclasses decide what a connection gets.

    Single use: start() once, stop() once (stop() is idempotent).
    """

    thread_name = "hostile-tcp"

    def __init__(self, host: str = LOOPBACK, port: int = 0) -> None:
        self.host = host
        self._requested_port = port
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._cond = threading.Condition()
        self._accepted = 0
        self._bytes_received = 0
        self._open: set[socket.socket] = set()

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("server not started")
        port: int = self._listener.getsockname()[1]
        return port

    @property
    def connections_accepted(self) -> int:
        with self._cond:
            return self._accepted

    @property
    def connections_open(self) -> int:
        with self._cond:
            return len(self._open)

    @property
    def bytes_received(self) -> int:
        """Bytes clients sent (read and discarded), e.g. to see that a CONNECT was tried."""
        with self._cond:
            return self._bytes_received

    def wait_for_connections(self, count: int, timeout: float) -> None:
        """Wait until at least ``count`` connections were accepted in total."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._accepted < count:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{type(self).__name__} on port {self.port}: {self._accepted} connection(s), "
                        f"wanted {count} within {timeout}s"
                    )
                self._cond.wait(remaining)

    def start(self: _S) -> _S:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self._requested_port))
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        self._thread = threading.Thread(target=self._run, name=f"{self.thread_name}:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every held connection and the listener."""
        if self._thread is None:
            return
        self._stopping.set()
        with contextlib.suppress(OSError):  # the loop already left (and closed the pair) when a client vanished
            self._wake_w.send(b"x")
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- subclass hook -----------------------------------------------------

    def on_accept(self, conn: socket.socket) -> bool:
        """Handle a fresh connection; return True to hold it open, False to close it."""
        raise NotImplementedError

    # -- loop --------------------------------------------------------------

    def _run(self) -> None:
        assert self._listener is not None
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                for key, _ in sel.select():
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._wake_r:
                        continue
                    if sock is self._listener:
                        self._accept(sel)
                    else:
                        self._drain(sel, sock)
        finally:
            sel.close()
            with self._cond:
                for conn in self._open:
                    conn.close()
                self._open.clear()
            self._listener.close()
            self._wake_r.close()
            self._wake_w.close()

    def _accept(self, sel: selectors.BaseSelector) -> None:
        try:
            conn, _ = self._listener.accept()  # type: ignore[union-attr]
        except BlockingIOError:
            return
        with self._cond:
            self._accepted += 1
            self._cond.notify_all()
        try:
            keep = self.on_accept(conn)
        except OSError:
            keep = False  # The client already left; nothing to hold.
        if not keep:
            conn.close()
            return
        conn.setblocking(False)
        with self._cond:
            self._open.add(conn)
        sel.register(conn, selectors.EVENT_READ)

    def _drain(self, sel: selectors.BaseSelector, conn: socket.socket) -> None:
        # Read and discard: the point is never to answer, and reading keeps a
        # client's send from blocking on a full buffer, which would test something else.
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        with self._cond:
            self._bytes_received += len(data)
            if not data:
                self._open.discard(conn)
        if not data:
            sel.unregister(conn)
            conn.close()


class BlackHole(_TcpServer):
    """Accepts every connection and never sends a byte; holds it open until stop().

    Models a broker or camera that hung after accept (or a middlebox swallowing
    traffic): the client must time out on its own deadline.
    """

    thread_name = "black-hole"

    def on_accept(self, conn: socket.socket) -> bool:
        return True


class GarbageServer(_TcpServer):
    """Accepts, writes ``payload`` at once, then holds the socket or closes it.

    Models a wrong service on the port (or a corrupted peer): the client must
    fail its handshake cleanly rather than crash or hang.
    """

    thread_name = "garbage-server"

    def __init__(
        self,
        host: str = LOOPBACK,
        port: int = 0,
        *,
        payload: bytes = DEFAULT_GARBAGE,
        close_after_write: bool = False,
    ) -> None:
        super().__init__(host, port)
        self.payload = payload
        self.close_after_write = close_after_write

    def on_accept(self, conn: socket.socket) -> bool:
        # Blocking send of a small payload into an empty socket buffer completes at once.
        conn.sendall(self.payload)
        return not self.close_after_write


class SlowClients:
    """Hostile clients of a server: `slow` ones that each send one byte of a request every `interval_s` (a
    slow-loris), `idle` ones that connect and send nothing (a port scanner, a stuck scraper), and `deaf` ones
    that send a whole request and never read the answer. A thread keeps them at it, reconnecting any the
    server closes, until stop()."""

    def __init__(self, host: str, port: int, *, slow: int = 8, idle: int = 0, deaf: int = 0,
                 interval_s: float = 2.0, request: bytes = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") -> None:
        self.host, self.port = host, port
        self._kinds = ["slow"] * slow + ["idle"] * idle + ["deaf"] * deaf
        self._interval_s = interval_s
        self._request = request
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)
        self.connects = 0  # how many connections were opened, reconnects included
        self.refused = 0  # connection attempts the server did not take

    def _connect(self, kind: str) -> socket.socket | None:
        """A new connection of this kind, or None when the server did not take it (its backlog full, or gone):
        a port scanner does not give up, so the slot tries again at the next interval."""
        try:
            sock = socket.create_connection((self.host, self.port), timeout=1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            if kind == "deaf":
                sock.sendall(self._request)
        except OSError:
            self.refused += 1
            return None
        sock.setblocking(False)
        self.connects += 1
        return sock

    def _run(self) -> None:
        slots: list[list[Any]] = [[kind, self._connect(kind), 0] for kind in self._kinds]  # kind, socket, bytes sent
        while not self._stop.wait(self._interval_s):
            for slot in slots:
                kind, sock, sent = slot
                if sock is None:
                    slot[1] = self._connect(kind)
                    continue
                try:
                    if kind == "slow":
                        sock.send(self._request[sent % len(self._request):][:1])
                        slot[2] = sent + 1
                    elif sock.recv(1, socket.MSG_PEEK) == b"":
                        raise ConnectionResetError("closed by the server")
                except BlockingIOError:
                    pass  # still open, nothing said
                except OSError:  # the server closed it (its deadline): come back, as a slow-loris does
                    sock.close()
                    slot[1], slot[2] = self._connect(kind), 0
        for _, sock, _ in slots:
            if sock is not None:
                sock.close()

    def start(self) -> SlowClients:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def __enter__(self) -> SlowClients:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
