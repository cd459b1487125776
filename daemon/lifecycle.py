"""Starting stages in order and stopping them in reverse, within one deadline.

Stages are started consumer-first (publisher … capture) so nothing is produced before its consumer runs,
and stopped producer-first, so each stage drains what it holds into a consumer that is still alive.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol


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
