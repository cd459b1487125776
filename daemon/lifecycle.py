"""Starting stages in order and stopping them in reverse, within one deadline.

Stages are started consumer-first (publisher … capture) so nothing is produced before its consumer runs,
and stopped producer-first, so each stage drains what it holds into a consumer that is still alive.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Protocol

import structlog

from daemon.logs import get_logger

_log = get_logger("linewatch.lifecycle")


class Stage(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self, deadline: float | None = None) -> None:
        """Ask the stage to finish; `deadline` (time.monotonic) is when its drain must end."""

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when it has ended."""


def start_in_order(stages: Sequence[Stage]) -> None:
    for stage in stages:
        stage.start()


def stop_in_reverse(stages: Sequence[Stage], deadline: float, *, min_last_s: float = 1.0) -> list[str]:
    """Stop the stages last-started first. Returns the names of those that did not end by the deadline.

    A stuck stage does not stop the others from being stopped, and the last stage (the publisher) always gets
    `min_last_s` to say goodbye, even when the ones before it used the whole deadline.
    """
    stuck: list[str] = []
    ordered = list(reversed(stages))
    for index, stage in enumerate(ordered):
        last = index == len(ordered) - 1
        until = max(deadline, time.monotonic() + min_last_s) if last else deadline
        stage.stop(until)
        if not stage.join(max(0.0, until - time.monotonic())):
            stuck.append(stage.name)
    return stuck


class CameraStage:
    """One named thread per camera stage (`detect:cam1`), sharing the pipeline's single stop event.

    Subclasses implement `run()`. Every log line from the thread carries `camera_id`. An exception escaping
    `run()` is a bug: it is logged, kept in `error`, and sets the stop event, because a stage that died
    quietly would leave the daemon looking healthy while it inspects nothing.
    """

    kind = "stage"

    def __init__(self, camera_id: str, stop: threading.Event) -> None:
        self.camera_id = camera_id
        self.name = f"{self.kind}:{camera_id}"
        self._stop = stop
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, deadline: float | None = None) -> None:
        self._stop.set()  # the shared stop event: the stage drains what it holds, then ends

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def run(self) -> None:
        raise NotImplementedError

    def _main(self) -> None:
        structlog.contextvars.bind_contextvars(camera_id=self.camera_id)
        try:
            self.run()
        except Exception as exc:
            self.error = exc
            _log.exception("stage_crashed", stage=self.name)
            self._stop.set()
