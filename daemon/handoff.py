"""A bounded hand-off between two stages with a named drop policy.

A live camera must never be slowed by a slow detector: its hand-off keeps the newest frames and drops (and
counts) the oldest. A video file or an offline evaluation must lose nothing: its hand-off makes the producer
wait. Both end with an `END_OF_STREAM` sentinel put by the producer in `finally`, so the consumer never
blocks forever.
"""

from __future__ import annotations

import collections
import enum
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from daemon.frames import END_OF_STREAM, EndOfStream

T = TypeVar("T")

# How often a blocked producer re-checks the stop event. Only bounds shutdown latency; data wakes it at once.
_STOP_POLL_S = 0.1


class DropPolicy(enum.Enum):
    LATEST = "latest"  # full: drop the oldest item, keep the newest; never blocks the producer
    WAIT = "wait"  # full: the producer waits for room (or for the stop event); nothing is dropped


class Bell:
    """Wakes one consumer that reads several hand-offs (the detector, one per camera): every put or close rings.

    The consumer notes `rings` before it looks at its hand-offs and then waits for a ring after that, so a put
    that lands between its look and its wait is never missed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._rings = 0

    @property
    def rings(self) -> int:
        return self._rings

    def ring(self) -> None:
        with self._cond:
            self._rings += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> bool:
        """Until a ring after `seen`, or `timeout`. True when it rang."""
        with self._cond:
            return self._cond.wait_for(lambda: self._rings != seen, timeout)


class Handoff(Generic[T]):
    def __init__(
        self,
        name: str,
        capacity: int,
        policy: DropPolicy,
        stop: threading.Event,
        *,
        on_drop: Callable[[], None] | None = None,
        bell: Bell | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.name = name
        self.capacity = capacity
        self.policy = policy
        self._stop = stop
        self._items: collections.deque[T] = collections.deque()
        self._closed = False
        self._cond = threading.Condition()
        self._on_drop = on_drop  # counts each drop in the daemon's metrics
        self._bell = bell  # rung on every put and close, for a consumer of several hand-offs
        self.put_total = 0
        self.dropped_total = 0

    def put(self, item: T) -> bool:
        """Hand an item over. Returns False if it was not accepted (stopping, or closed)."""
        with self._cond:
            if self.policy is DropPolicy.WAIT:
                while len(self._items) >= self.capacity and not self._closed and not self._stop.is_set():
                    self._cond.wait(_STOP_POLL_S)
                if self._closed or len(self._items) >= self.capacity:
                    return False
            elif self._closed:
                return False
            elif len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped_total += 1
                if self._on_drop is not None:
                    self._on_drop()
            self._append(item)
        self._ring()
        return True

    def offer(self, item: T) -> bool:
        """Hand an item over without ever waiting, whatever the policy: False when full or closed (the caller says
        what that refusal means). For producers that must not be held up: an event loop, a capture thread."""
        with self._cond:
            if self._closed or len(self._items) >= self.capacity:
                return False
            self._append(item)
        self._ring()
        return True

    def _append(self, item: T) -> None:
        """With the lock held."""
        self._items.append(item)
        self.put_total += 1
        self._cond.notify_all()

    def _ring(self) -> None:
        if self._bell is not None:
            self._bell.ring()

    @property
    def closed(self) -> bool:
        return self._closed

    def get(self, timeout: float) -> T | EndOfStream | None:
        """The next item; END_OF_STREAM once closed and drained; None if nothing came within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    return END_OF_STREAM
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        """No more items will come; the consumer drains what is left, then sees END_OF_STREAM."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._ring()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


def consume(handoff: Handoff[T], handle: Callable[[T], None], poll_s: float = 0.5) -> None:
    """Call `handle` on every item until END_OF_STREAM: the consumer drains the hand-off even after a stop."""
    while (item := handoff.get(poll_s)) is not END_OF_STREAM:
        if item is not None:
            handle(item)
