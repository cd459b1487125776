"""Stage threads, and starting them in order and stopping them in reverse, within one deadline.

Stages are started consumer-first (publisher … capture) so nothing is produced before its consumer runs,
and stopped producer-first, so each stage drains what it holds into a consumer that is still alive.

Every stage is a `StageThread`: one named thread, the pipeline's single stop event, one way to report a
failure (`fail`, by kind; see exitcodes.py) and one `Progress` record that health checks, metrics and the
sd_notify watchdog read.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import structlog

from daemon.exitcodes import FailureKind, StageFailure
from daemon.logs import get_logger

_log = get_logger("linewatch.lifecycle")
_LEAVE_GRACE_S = 0.25
_PR_SET_NAME = 15
_libc: ctypes.CDLL | None = None


def name_native_thread(name: str) -> None:
    """Give the calling thread its stage's name in the kernel too (15 bytes), so `top -H`, `ps -L`, py-spy and
    /proc/<pid>/task/*/comm show which stage spends the CPU (bench/cpu_account.py adds them up). Linux only; a
    no-op elsewhere."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None)  # the process's own symbols: libc's prctl
        _libc.prctl(_PR_SET_NAME, name.encode("utf-8", "replace")[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Stage(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self, deadline: float | None = None) -> None:
        """Ask the stage to finish; `deadline` (time.monotonic) is when its drain must end."""

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when it has ended."""


class Progress:
    """When a stage last moved, and since when it has been inside one unit of work.

    A stage marks each blocking unit of work (a camera read, an inference, an outbox commit, a network pass)
    with `busy()`. A unit that has not finished long after it should have is a wedged stage: Python cannot
    interrupt a thread blocked in C, but it can notice and say so. Idle waiting (an empty hand-off, a
    reconnect backoff) is not busy: a camera that is reconnecting is alive. A stage of several threads (the
    detector's streams) runs units side by side; the oldest unfinished one is the stage's.
    """

    def __init__(self) -> None:
        self.last_done: float | None = None  # when the last unit finished
        self.units = 0
        self._started: dict[int, float] = {}  # thread ident -> when its unfinished unit began
        self._lock = threading.Lock()

    @property
    def busy_since(self) -> float | None:
        """time.monotonic() when the oldest unfinished unit began; None when idle."""
        with self._lock:
            return min(self._started.values(), default=None)

    @contextmanager
    def busy(self) -> Iterator[None]:
        ident = threading.get_ident()
        with self._lock:
            self._started[ident] = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                del self._started[ident]
                self.last_done = time.monotonic()
                self.units += 1

    def stuck_for(self, now: float | None = None) -> float:
        """Seconds the current unit of work has lasted (0 when idle)."""
        since = self.busy_since
        return 0.0 if since is None else max(0.0, (time.monotonic() if now is None else now) - since)


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
        # A stage that drains until its deadline needs a moment after it to leave (the publisher, broker down).
        if not stage.join(max(0.0, until - time.monotonic()) + _LEAVE_GRACE_S):
            stuck.append(stage.name)
    return stuck


class StageThread:
    """One named thread sharing the pipeline's single stop event.

    Subclasses implement `run()`. A stage that cannot go on calls `fail(kind, reason)`: the failure is kept,
    logged once and sets the stop event, and the composition root turns its kind into the exit code. An
    exception escaping `run()` is a bug (`FailureKind.BUG`, exit 1): a stage that died quietly would leave
    the daemon looking healthy while it inspects nothing.
    """

    def __init__(self, name: str, stop: threading.Event, camera_id: str | None = None) -> None:
        self.name = name
        # What a failure does beyond being kept: stop the pipeline. A camera of several is isolated instead
        # (the composition root sets this): its failure is its own, and the other cameras go on.
        self.on_failure: Callable[[StageFailure], None] = lambda _: stop.set()
        self.camera_id = camera_id
        self._stop = stop
        self.progress = Progress()
        self._failure: StageFailure | None = None
        self._failure_lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    @property
    def failure(self) -> StageFailure | None:
        return self._failure

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    def fail(self, kind: FailureKind, reason: str) -> None:
        """Report that this stage cannot go on. The first failure wins; it stops the pipeline (see on_failure).

        Thread-safe: the main loop reports a stage stuck in native code on the stage's behalf.
        """
        with self._failure_lock:
            if self._failure is not None:
                return
            self._failure = failure = StageFailure(self.name, kind, reason)
        _log.error("stage_failed", stage=self.name, kind=kind.value, reason=reason)
        self.on_failure(failure)

    def start(self) -> None:
        self._thread.start()

    def stop(self, deadline: float | None = None) -> None:
        self._stop.set()  # the shared stop event: the stage drains what it holds, then ends

    def join(self, timeout: float | None = None) -> bool:
        if self.started:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def run(self) -> None:
        raise NotImplementedError

    def helper(self, suffix: str, work: Callable[[], None]) -> threading.Thread:
        """A further thread of this stage (not started), named `name-suffix`, whose crash is the stage's bug."""
        name = f"{self.name}-{suffix}"
        return threading.Thread(target=self._guarded, args=(work, name), name=name, daemon=True)

    def _main(self) -> None:
        if self.camera_id is not None:
            structlog.contextvars.bind_contextvars(camera_id=self.camera_id)
        self._guarded(self.run, self.name)

    def _guarded(self, work: Callable[[], None], thread: str) -> None:
        name_native_thread(thread)
        try:
            work()
        except Exception as exc:
            _log.exception("stage_crashed", stage=self.name, thread=thread)
            self.fail(FailureKind.BUG, f"{type(exc).__name__}: {exc}")


class CameraStage(StageThread):
    """A stage of one camera's pipeline, named `kind:camera_id`; every line it logs carries `camera_id`."""

    kind = "stage"

    def __init__(self, camera_id: str, stop: threading.Event) -> None:
        super().__init__(f"{self.kind}:{camera_id}", stop, camera_id)
        self.camera_id: str = camera_id
