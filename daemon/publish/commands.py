"""Commands to the daemon over MQTT (job triggers): topic -> handler, subscribed at QoS 0 on each connect. A trigger
is live: one the broker queued while the daemon was away, or kept retained, would start a job for a part long gone,
so a retained command is ignored, and one over MAX_COMMAND_BYTES too."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from daemon.logs import get_logger

log = get_logger("linewatch.mqtt")

MAX_COMMAND_BYTES = 1024  # a trigger: {"part_id": "..."}


class Commands:
    def __init__(self, handlers: Mapping[str, Callable[[bytes], None]] | None) -> None:
        self._handlers = dict(handlers or {})

    def subscriptions(self) -> list[tuple[str, int]]:
        return [(topic, 0) for topic in self._handlers]

    def dispatch(self, topic: str, payload: bytes, retain: bool) -> None:
        handler = self._handlers.get(topic)
        if handler is None or retain:
            return
        if len(payload) > MAX_COMMAND_BYTES:
            log.warning("mqtt_command_too_large", topic=topic, payload_bytes=len(payload))
            return
        try:
            handler(payload)
        except Exception:  # a command's failure is its own (logged there); the link and the queue go on
            log.exception("mqtt_command_failed", topic=topic)
