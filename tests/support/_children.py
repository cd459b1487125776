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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

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
