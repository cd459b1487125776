"""Capped exponential backoff with full jitter, for everything that reconnects.

Jitter keeps a line of stations that lost the same switch from reconnecting in lock-step. The caller waits
with `stop.wait(delay)`, so a shutdown interrupts any wait at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Backoff:
    initial_s: float = 0.5
    cap_s: float = 10.0
    factor: float = 2.0
    jitter: float = 0.5  # the delay is drawn from [d*(1-jitter), d]
    attempts: int = 0  # consecutive failures since the last success
    last_error: str | None = None

    def failed(self, error: str) -> float:
        """Record a failure; returns how long to wait before the next attempt."""
        self.attempts += 1
        self.last_error = error
        ceiling = min(self.cap_s, self.initial_s * self.factor ** (self.attempts - 1))
        return random.uniform(ceiling * (1.0 - self.jitter), ceiling)

    def succeeded(self) -> None:
        self.attempts = 0
