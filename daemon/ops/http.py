"""The ops HTTP server: `/healthz`, `/readyz` and `/metrics`, on its own named thread (`ops:http`); with the
settings that ask for them, `POST /cameras/<id>/trigger` and `POST /detect` (ops/detect_api.py).

The probes only read: the health verdicts and the metrics registry. A port scanner, a stuck scraper or a slow-loris
client must never make a healthy daemon look dead, nor hold up its exit, so the server is an asyncio loop on
its own thread where no client can block another:
- every connection has one deadline for the whole exchange (request head in, response out): REQUEST_DEADLINE_S
  (a /detect request: its upload and answer get DETECT_TIMEOUT_S more, its decoding runs off the loop);
- at most MAX_CONNECTIONS are open at once; a new one makes the oldest unfinished one give way;
- a request head is at most MAX_HEAD_BYTES; one request per connection (`Connection: close`);
- `stop()` closes everything and returns within STOP_TIMEOUT_S, whatever the clients do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon.logs import get_logger
from daemon.metrics import Metrics
from daemon.ops.health import Health
from daemon.redact import redact_values

if TYPE_CHECKING:
    from daemon.ops.detect_api import DetectApi

log = get_logger("linewatch.http")

REQUEST_DEADLINE_S = 2.0
MAX_CONNECTIONS = 32
MAX_HEAD_BYTES = 8192
STOP_TIMEOUT_S = 2.0
MAX_BODY_BYTES = 1024  # a trigger's body: {"part_id": "..."}
ENDPOINTS = ("/healthz", "/readyz", "/metrics")
TRIGGER_PATH = re.compile(r"^/cameras/([A-Za-z0-9_.-]+)/trigger$")
_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 411: "Length Required", 413: "Content Too Large", 429: "Too Many Requests",
            431: "Request Header Fields Too Large", 503: "Service Unavailable", 504: "Gateway Timeout"}
_JSON = "application/json"

# camera id, body -> (status, answer): POST /cameras/<id>/trigger, set once the pipeline runs (LINEWATCH_HTTP__TRIGGERS)
TriggerHandler = Callable[[str, bytes], tuple[int, dict[str, object]]]


class OpsServerError(Exception):
    """The port cannot be bound (in use, or not permitted): exit code 3, naming the variable."""


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, IPv4 or IPv6 as the address says ("" or 0.0.0.0: every IPv4 interface)."""
    try:
        family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        return socket.create_server((host, port), family=family, backlog=64, reuse_port=False)
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise OpsServerError(
            f"cannot serve /healthz and /metrics on {host}:{port}: {reason}; set LINEWATCH_HTTP__PORT to a free "
            "port or LINEWATCH_HTTP__ENABLED=false"
        ) from None


class OpsHttpServer:
    def __init__(self, host: str, port: int, metrics: Metrics, health: Health, *, detect: bool = False,
                 detect_max_bytes: int = 20 << 20, detect_timeout_s: float = 10.0) -> None:
        self._sock = _listen(host, port)  # bound now: a taken port is an exit 3 before the model loads
        self._metrics = metrics
        self._health = health
        self.name = "ops:http"
        self._address = f"{host}:{port}"
        self._loop = asyncio.new_event_loop()
        self._closing = asyncio.Event()  # set by stop(), through the loop, even before the loop runs
        # /metrics reads the outbox, whose lock an fsync or a full disk can hold for seconds: it is rendered on a
        # thread of its own, so that no scrape holds up the loop (and /healthz, which reads no outbox).
        self._metrics_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ops:metrics")
        self._open: OrderedDict[asyncio.Task[None], asyncio.StreamWriter] = OrderedDict()  # oldest first
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.on_trigger: TriggerHandler | None = None  # set by the composition root when triggers are enabled
        # POST /detect (LINEWATCH_HTTP__DETECT): 503 until the composition root sets the API, once the model is ready
        self.detect_expected = detect
        self.detect: DetectApi | None = None
        self._detect_max_bytes = detect_max_bytes
        self._detect_timeout_s = detect_timeout_s
        # a request's image is decoded and letterboxed off the loop (a 5 MP JPEG: tens of ms)
        self._detect_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ops:detect")

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def start(self) -> None:
        self._thread.start()
        log.info("http_listening", address=self._address, port=self.port, endpoints=list(ENDPOINTS),
                 request_deadline_s=REQUEST_DEADLINE_S, max_connections=MAX_CONNECTIONS)

    def stop(self) -> None:
        """Close the listener and every connection; returns within STOP_TIMEOUT_S."""
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop ended on its own meanwhile
                self._loop.call_soon_threadsafe(self._begin_close)
            self._thread.join(STOP_TIMEOUT_S)
        if self._thread.is_alive():
            log.warning("http_stop_timeout", timeout_s=STOP_TIMEOUT_S)
        else:
            self._loop.close()
        self._metrics_pool.shutdown(wait=False, cancel_futures=True)
        self._detect_pool.shutdown(wait=False, cancel_futures=True)
        self._sock.close()

    # -- the loop's thread --------------------------------------------------------------------------------
    def _begin_close(self) -> None:
        self._closing.set()

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except Exception:
            log.exception("http_server_failed")  # health is then unreachable; the pipeline itself goes on

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._accept, sock=self._sock, limit=MAX_HEAD_BYTES)
        async with server:
            await self._closing.wait()
            server.close()
            # Every connection's task ends before the loop does, those accepted while it closed too (a task left
            # pending would be destroyed mid-read when the loop closes)
            current = asyncio.current_task()
            while True:
                await asyncio.sleep(0)  # what the listener accepted last gets its task
                tasks = [task for task in asyncio.all_tasks() if task is not current]
                if not tasks:
                    break
                for task in tasks:
                    if (writer := self._open.get(task)) is not None:
                        writer.transport.abort()
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._open) >= MAX_CONNECTIONS:  # the oldest unfinished connection gives way to the new one
            _, oldest = self._open.popitem(last=False)
            oldest.transport.abort()
        self._open[task] = writer
        try:
            started = asyncio.get_running_loop().time()
            try:
                head: bytes | None = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_DEADLINE_S)
            except asyncio.LimitOverrunError:
                head = None
            # /detect: the body's upload and the model's answer get their own deadline; all else REQUEST_DEADLINE_S
            limit = (self._detect_timeout_s + REQUEST_DEADLINE_S if head is not None and _is_detect(head)
                     else REQUEST_DEADLINE_S - (asyncio.get_running_loop().time() - started))
            await asyncio.wait_for(self._exchange(head, reader, writer), max(0.0, limit))
        except (TimeoutError, asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # too slow, gone, or cut off: nothing to answer
        finally:
            self._open.pop(task, None)
            writer.transport.abort()

    async def _exchange(self, head: bytes | None, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        if head is None:
            code, body, kind = 431, b'{"error": "request head too large"}\n', "application/json"
        else:
            answer = await self._post(head, reader) if head.startswith(b"POST ") else self._answer(head)
            if answer is None:  # /metrics: rendered off the loop, within this exchange's deadline
                body = await asyncio.get_running_loop().run_in_executor(self._metrics_pool, self._render_metrics)
                code, kind = 200, CONTENT_TYPE_LATEST
            else:
                code, body, kind = answer
            method = head.split(b" ", 1)[0]
            if method == b"HEAD":
                body = b"" if code < 400 else body
        headers = (f"HTTP/1.1 {code} {_REASONS.get(code, '')}\r\nContent-Type: {kind}\r\n"
                   f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n"
                   "Server: linewatch\r\n\r\n")
        writer.write(headers.encode("latin-1") + body)
        await writer.drain()

    async def _post(self, head: bytes, reader: asyncio.StreamReader) -> tuple[int, bytes, str]:
        """POST /cameras/<id>/trigger: a body of at most MAX_BODY_BYTES, read within the exchange's deadline."""
        line = head.split(b"\r\n", 1)[0].split(b" ")
        target = line[1].split(b"?", 1)[0].decode("latin-1") if len(line) == 3 else ""
        match, handler = TRIGGER_PATH.match(target), self.on_trigger
        if target in ENDPOINTS:
            return 405, b'{"error": "only GET and HEAD"}\n', _JSON
        if target == "/detect" and self.detect_expected:
            return await self._detect(head, line[1].decode("latin-1"), reader)
        if match is None or handler is None:
            return 404, (b'{"error": "POST only to /cameras/<id>/trigger, with LINEWATCH_HTTP__TRIGGERS, or to '
                         b'/detect, with LINEWATCH_HTTP__DETECT"}\n'), _JSON
        size, refused = _content_length(head, MAX_BODY_BYTES, "a trigger body is at most 1024 bytes")
        if refused is not None:
            return refused
        body = await reader.readexactly(size) if size else b""
        code, answer = handler(match.group(1), body)
        return code, json.dumps(answer).encode() + b"\n", _JSON

    async def _detect(self, head: bytes, target: str, reader: asyncio.StreamReader) -> tuple[int, bytes, str]:
        """POST /detect[?camera=<id>]: 401 without the token, 503 until the model is ready, 413 for a body over the
        limit, then the image inspected (daemon/ops/detect_api.py) within DETECT_TIMEOUT_S (504 after)."""
        api = self.detect
        if api is None:
            return 503, b'{"error": "the model is not ready yet"}\n', _JSON
        if not api.authorized(_header(head, b"authorization")):
            return 401, b'{"error": "send Authorization: Bearer <the token in LINEWATCH_HTTP__DETECT_TOKEN_FILE>"}\n', \
                _JSON
        size, refused = _content_length(
            head, self._detect_max_bytes, f"an image is at most {self._detect_max_bytes} bytes (DETECT_MAX_MB)")
        if refused is not None:
            return refused
        body = await reader.readexactly(size) if size else b""
        query = parse_qs(target.split("?", 1)[1]) if "?" in target else {}
        camera = query.get("camera", [None])[-1]
        loop = asyncio.get_running_loop()
        queued = await loop.run_in_executor(self._detect_pool, api.submit, body,
                                            _header(head, b"content-type") or "", camera)
        if not isinstance(queued, Future):
            code, answer = queued
            return code, json.dumps(answer).encode() + b"\n", _JSON
        try:
            code, answer = await asyncio.wait_for(asyncio.wrap_future(queued), self._detect_timeout_s)
        except (TimeoutError, asyncio.TimeoutError):
            api.forget(queued)
            code, answer = 504, {"error": f"not inspected within {self._detect_timeout_s:g} s "
                                 "(LINEWATCH_HTTP__DETECT_TIMEOUT_S); the cameras keep the model busy"}
        return code, json.dumps(answer, separators=(",", ":")).encode() + b"\n", _JSON

    def _render_metrics(self) -> bytes:
        return generate_latest(self._metrics.registry)

    def _answer(self, head: bytes) -> tuple[int, bytes, str] | None:
        """(status, body, content type), or None for /metrics (rendered on its own thread)."""
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return 400, b'{"error": "not an HTTP/1.x request"}\n', "application/json"
        method, target = parts[0], parts[1].split(b"?", 1)[0].decode("latin-1")
        if method not in (b"GET", b"HEAD"):
            return 405, b'{"error": "only GET and HEAD (and POST to a trigger)"}\n', _JSON
        if target == "/metrics":
            return None
        if target in ("/healthz", "/readyz"):
            verdict = self._health.liveness() if target == "/healthz" else self._health.readiness()
            body = json.dumps(redact_values(verdict.body()), indent=1).encode()
            return (200 if verdict.ok else 503), body, "application/json"
        return 404, b'{"error": "not found; try /healthz, /readyz or /metrics"}\n', "application/json"


def _is_detect(head: bytes) -> bool:
    return head.startswith((b"POST /detect ", b"POST /detect?"))


def _header(head: bytes, name: bytes) -> str | None:
    found = re.search(rb"(?im)^" + name + rb":[ \t]*([^\r\n]*?)[ \t]*\r?$", head)
    return found.group(1).decode("latin-1") if found else None


def _content_length(head: bytes, limit: int, too_large: str) -> tuple[int, tuple[int, bytes, str] | None]:
    """The body's size from the head, or the answer that refuses it (no number, chunked or repeated, too large)."""
    lengths = re.findall(rb"(?im)^content-length:[ \t]*(\d{1,12})[ \t]*\r?$", head)
    chunked = re.search(rb"(?im)^transfer-encoding:", head) is not None
    if re.search(rb"(?im)^content-length:", head) and not lengths:
        return 0, (400, b'{"error": "Content-Length is not a number"}\n', _JSON)
    if chunked or len(set(lengths)) > 1:
        return 0, (411, b'{"error": "send a Content-Length (no chunked body)"}\n', _JSON)
    size = int(lengths[0]) if lengths else 0
    if size > limit:
        return 0, (413, json.dumps({"error": too_large}).encode() + b"\n", _JSON)
    return size, None
