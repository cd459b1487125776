"""The ops HTTP server: `/healthz`, `/readyz` and `/metrics`, on its own named thread (`ops:http`).

It only reads: the health verdicts and the metrics registry. Requests are served one at a time on this
thread (a scrape every few seconds and a health probe need no more), each with a socket timeout, so a slow
client cannot pin it and nothing it does can block a pipeline stage.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon.logs import get_logger
from daemon.metrics import Metrics
from daemon.ops.health import Health
from daemon.redact import redact_values

log = get_logger("linewatch.http")

_REQUEST_TIMEOUT_S = 5.0


class OpsServerError(Exception):
    """The port cannot be bound (in use, or not permitted): exit code 3, naming the variable."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = _REQUEST_TIMEOUT_S
    server_version = "linewatch"
    sys_version = ""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.server.metrics.registry), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/readyz"):
            verdict = self.server.health.liveness() if path == "/healthz" else self.server.health.readiness()
            body = json.dumps(redact_values(verdict.body()), indent=1).encode()
            self._send(200 if verdict.ok else 503, body, "application/json")
        else:
            self._send(404, b'{"error": "not found; try /healthz, /readyz or /metrics"}\n', "application/json")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http_request", client=self.client_address[0], request=self.requestline)


class _Server(HTTPServer):
    def __init__(self, address: tuple[str, int], metrics: Metrics, health: Health) -> None:
        self.metrics = metrics
        self.health = health
        super().__init__(address, _Handler)


class OpsHttpServer:
    def __init__(self, host: str, port: int, metrics: Metrics, health: Health) -> None:
        try:
            self._server = _Server((host, port), metrics, health)
        except OSError as exc:
            raise OpsServerError(
                f"cannot serve /healthz and /metrics on {host}:{port}: {exc.strerror or exc}; set "
                "LINEWATCH_HTTP__PORT to a free port or LINEWATCH_HTTP__ENABLED=false"
            ) from None
        self.name = "ops:http"
        self._address = f"{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name=self.name, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("http_listening", address=self._address, port=self.port,
                 endpoints=["/healthz", "/readyz", "/metrics"])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2.0)
