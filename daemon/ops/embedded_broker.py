"""An embedded MQTT broker (amqtt) on loopback, for `linewatch demo` only.

`linewatch run` never starts a broker: on a line the broker is infrastructure (mosquitto), not ours.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

from daemon.logs import get_logger

log = get_logger("linewatch.demo")


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class EmbeddedBroker:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_loopback_port()
        self._loop = asyncio.new_event_loop()
        self._broker: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="demo:broker", daemon=True)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise RuntimeError(f"embedded broker did not start: {self._error}")
        log.info("embedded_broker_started", url=self.url, note="demo only; `linewatch run` never starts one")

    def _serve(self) -> None:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        asyncio.set_event_loop(self._loop)
        try:
            self._broker = Broker(config, loop=self._loop)
            self._loop.run_until_complete(self._broker.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        if self._broker is not None and self._loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
            try:
                future.result(timeout=5.0)
            except Exception as exc:
                log.warning("embedded_broker_shutdown_failed", error=repr(exc))
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)
