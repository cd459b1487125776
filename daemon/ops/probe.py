"""`linewatch healthcheck`: ask a running daemon's /healthz (or /readyz) where its settings say it listens."""

from __future__ import annotations

import http.client
import json

from daemon.settings import HttpSettings

# A wildcard bind address is not one to connect to: ask the same host's loopback instead.
_LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def probe_health(settings: HttpSettings, path: str = "/healthz", timeout_s: float = 3.0) -> tuple[bool, str]:
    """(healthy, one line saying why). With HTTP disabled there is nothing to ask: healthy, and it says so."""
    if not settings.enabled:
        return True, "linewatch healthcheck: LINEWATCH_HTTP__ENABLED=false, so there is no /healthz to ask; " \
                     "reporting healthy (the process supervisor and the exit codes watch the daemon)"
    host = _LOOPBACK.get(settings.host, settings.host)
    connection = http.client.HTTPConnection(host, settings.port, timeout=timeout_s)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read(64 * 1024)
    except (OSError, http.client.HTTPException) as exc:
        return False, f"linewatch healthcheck: {host}:{settings.port}{path} unreachable: {exc}"
    finally:
        connection.close()
    try:
        reasons = json.loads(body).get("reasons", [])
    except (ValueError, AttributeError):
        reasons = []
    verdict = "healthy" if response.status == 200 else "unhealthy"
    detail = f": {'; '.join(map(str, reasons))}" if reasons else ""
    return response.status == 200, f"linewatch healthcheck: {path} {response.status} {verdict}{detail}"
