"""Reading the daemon's ops endpoints and its sd_notify messages from a test."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    code, body = http_get(port, path)
    return code, json.loads(body)


def wait_probe(port: int, path: str, ok: Callable[[int, dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
    """Poll an endpoint until `ok(code, body)`: an HTTP endpoint offers nothing to block on, so this asks
    again every 0.2 s until the deadline."""
    end = time.monotonic() + timeout
    last: tuple[int, dict[str, Any]] | None = None
    while time.monotonic() < end:
        try:
            last = probe(port, path)
            if ok(*last):
                return last[1]
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{path} never satisfied the condition within {timeout} s; last answer: {last}")


class NotifySocket:
    """A NOTIFY_SOCKET like systemd's: a unix datagram socket that records every message with its arrival."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.5)
        self._cond = threading.Condition()
        self.messages: list[tuple[float, str]] = []
        self._closed = False
        self._thread = threading.Thread(target=self._read, name="test:notify", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed:
            try:
                data = self._sock.recv(4096)
            except OSError:
                continue
            with self._cond:
                self.messages.append((time.monotonic(), data.decode()))
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[[str], bool], timeout: float, since: float = 0.0) -> tuple[float, str]:
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for arrived, text in self.messages:
                    if arrived >= since and predicate(text):
                        return arrived, text
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no matching sd_notify message in {timeout} s: {self.messages[-10:]}")
                self._cond.wait(remaining)

    def between(self, start: float, end: float) -> list[str]:
        with self._cond:
            return [text for arrived, text in self.messages if start <= arrived <= end]

    def close(self) -> None:
        self._closed = True
        self._thread.join(2)
        self._sock.close()
