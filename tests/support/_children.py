"""Spawning and reaping of the harness's child processes.

Three layers make sure no broker, RTSP server or daemon outlives the test run:
the wrappers stop their process in ``stop()``/``__exit__``; a registry reaped at
interpreter exit catches wrappers that were never stopped; and the kernel's
parent-death signal (set through ``setpriv``) catches the case where pytest itself
is SIGKILLed, e.g. by a CI timeout, and no Python code runs at all.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

_SETPRIV = shutil.which("setpriv")

_lock = threading.Lock()
_live: set[subprocess.Popen[Any]] = set()


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    text: bool = False,
) -> subprocess.Popen[Any]:
    """Start ``argv`` and register it for reaping.

    The parent-death signal is tied to the *thread* that forks, so call this from
    a thread that lives as long as the child should (pytest's main thread does).
    """
    full = list(argv)
    if _SETPRIV is not None:
        # setpriv sets PR_SET_PDEATHSIG and then execs argv in place (same pid).
        full = [_SETPRIV, "--pdeathsig", "KILL", "--", *full]
    proc: subprocess.Popen[Any] = subprocess.Popen(
        full,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        text=text,
        # Own process group: a Ctrl-C aimed at pytest must not also hit the
        # services, whose shutdown the tests control explicitly.
        start_new_session=True,
    )
    with _lock:
        _live.add(proc)
    return proc


def reap(proc: subprocess.Popen[Any]) -> None:
    """Kill ``proc`` if it still runs, collect its status and forget it."""
    if proc.poll() is None:
        # A SIGSTOPped process still dies on SIGKILL; SIGCONT is not needed.
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        # Past 10 s it is unkillable (D state); nothing more a test harness can do.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    forget(proc)


def terminate(proc: subprocess.Popen[Any], timeout: float) -> int | None:
    """SIGTERM (resuming it first if stopped), wait up to ``timeout``, then SIGKILL.

    Returns the exit code, negative for a signal, as ``Popen.returncode`` does.
    """
    if proc.poll() is None:
        # A stopped process keeps SIGTERM pending until continued.
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    reap(proc)
    return proc.returncode


def forget(proc: subprocess.Popen[Any]) -> None:
    with _lock:
        _live.discard(proc)


@atexit.register
def _reap_all() -> None:
    with _lock:
        leftovers = list(_live)
    for proc in leftovers:
        reap(proc)


def system_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment without the venv's Python variables.

    Used for children run by the system interpreter, which must not pick up the
    venv's site-packages through PYTHONPATH/PYTHONHOME.
    """
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}}
    if extra:
        env.update(extra)
    return env


class ChildProcess:
    """The lifecycle every service the harness runs shares (mosquitto, the RTSP server, the daemon): a subclass
    spawns its process in start() and hands it to _adopt(); stop (SIGTERM, SIGKILL after a timeout), kill (a
    crash), pause and resume (a hung peer), close and `with` come from here, and a finalizer reaps the process if
    the object is dropped while it runs."""

    what = "child process"  # for the errors: "mosquitto not running"

    def __init__(self) -> None:
        self._proc: subprocess.Popen[Any] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait for a clean exit (SIGKILL after ``timeout``); the exit code, or None if none ran."""
        proc = self._take_proc()
        return terminate(proc, timeout) if proc is not None else None

    def kill(self) -> None:
        """SIGKILL: a crash, nothing saved."""
        proc = self._take_proc()
        if proc is not None:
            reap(proc)

    def pause(self) -> None:
        """SIGSTOP: its sockets stay open but nothing is answered (a hung peer)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _adopt(self, proc: subprocess.Popen[Any]) -> subprocess.Popen[Any]:
        self._proc = proc
        self._finalizer = weakref.finalize(self, reap, proc)
        return proc

    def _take_proc(self) -> subprocess.Popen[Any] | None:
        proc, self._proc = self._proc, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        return proc

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError(f"{self.what} not running")
        self._proc.send_signal(sig)
