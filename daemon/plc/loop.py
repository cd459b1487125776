"""A PLC server's life: its own named thread running an asyncio loop; `start()` returns once it listens (or raises
PlcServerError, which the composition root turns into exit code 3), `stop()` returns within STOP_TIMEOUT_S."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

from daemon.logs import get_logger

log = get_logger("linewatch.plc")

START_TIMEOUT_S = 15.0  # the OPC UA server imports its NodeSet first
STOP_TIMEOUT_S = 3.0


class PlcServerError(Exception):
    """The address cannot be served (in use, not permitted): exit code 3, naming the variable."""


class LoopServer:
    def __init__(self, name: str) -> None:
        self.name = name
        self._loop = asyncio.new_event_loop()
        self._closing = asyncio.Event()  # set through the loop by stop()
        self._listening = threading.Event()  # set by _serve once it listens, or when the loop ends
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    async def _serve(self) -> None:
        """Listen, set self._listening, serve until self._closing, shut down."""
        raise NotImplementedError

    def _refusal(self, error: str) -> str:
        """The one line PlcServerError says when the server could not start (naming the variable to change)."""
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()
        if not self._listening.wait(START_TIMEOUT_S) or self._error is not None:
            self.stop()
            raise PlcServerError(self._refusal(self._error or "no answer"))

    def stop(self, deadline: float | None = None) -> None:
        if self._thread.is_alive():
            self.call(self._closing.set)
            self._thread.join(STOP_TIMEOUT_S)

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def call(self, function: Callable[..., Any], *args: Any) -> None:
        """Run `function(*args)` on the loop's thread (from any thread); nothing once the loop has closed."""
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(function, *args)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except Exception as exc:
            self._error = str(exc) or type(exc).__name__
            log.exception("plc_server_failed", server=self.name)
        finally:
            self._listening.set()
            self._loop.close()
