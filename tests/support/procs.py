"""Run the daemon as a real subprocess and watch its JSON log on stdout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from tests.support import _children

REPO_ROOT = Path(__file__).resolve().parents[2]

LogRecord = dict[str, Any]
LogPredicate = Callable[[LogRecord], bool]


class DaemonProcess(_children.ChildProcess):
    """``python -m daemon ARGS`` in the repo root with ``env`` on top of a clean environment (with ``module=""``,
    ARGS is the whole command: an installed ``linewatch`` entry point).

    Every stdout line is parsed as JSON (the daemon logs JSON when stdout is not
    a TTY); lines that are not JSON are kept in ``non_json_lines`` so a test can
    insist there are none. stderr is kept as text. Both are read on threads so a
    chatty daemon can never block on a full pipe.

    Unlike the services, a DaemonProcess runs once and keeps its process after the exit (its code and logs stay
    readable): stop() and kill() collect it without letting go of it.
    """

    what = "daemon"

    def __init__(
        self,
        env: Mapping[str, str],
        args: Sequence[str] = ("run",),
        *,
        module: str = "daemon",
        inherit_env: bool = True,
        cwd: Path = REPO_ROOT,
    ) -> None:
        self.args = list(args)
        self.module = module
        self.cwd = cwd
        base: dict[str, str] = {}
        if inherit_env:
            # The developer's own LINEWATCH_* settings must not leak into a test.
            base = {k: v for k, v in os.environ.items() if not k.startswith("LINEWATCH_")}
        # Unbuffered, or log lines would sit in the child's pipe buffer and a
        # test would wait for a line that was already "written".
        self.env = {**base, "PYTHONUNBUFFERED": "1", **env}

        self._cond = threading.Condition()
        self._records: list[LogRecord] = []
        self._non_json: list[str] = []
        self._stderr: list[str] = []
        self._stdout_eof = False
        super().__init__()
        self._readers: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> DaemonProcess:
        if self._proc is not None:
            raise RuntimeError("already started; make a new DaemonProcess to run it again")
        proc = self._adopt(_children.spawn(
            [sys.executable, "-m", self.module, *self.args] if self.module else self.args,
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ))
        assert proc.stdout is not None and proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read_stdout, args=(proc.stdout,), name=f"daemon-stdout:{proc.pid}"),
            threading.Thread(target=self._read_stderr, args=(proc.stderr,), name=f"daemon-stderr:{proc.pid}"),
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()
        return self

    @property
    def pid(self) -> int:
        return self._require().pid

    @property
    def returncode(self) -> int | None:
        return self._require().poll()

    def send_signal(self, sig: signal.Signals | int) -> None:
        self._require().send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for exit and for the output readers to finish; return the exit code."""
        proc = self._require()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"daemon still running after {timeout}s\n{self.describe()}") from None
        _children.forget(proc)
        self._join_readers(timeout=5.0)
        return code

    def kill(self) -> None:
        """SIGKILL (a power cut, as far as the daemon can tell) and collect it."""
        proc = self._require()
        _children.reap(proc)
        self._join_readers(timeout=5.0)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, SIGKILL after ``timeout``; the exit code."""
        self.close(timeout)
        return self._proc.returncode if self._proc is not None else None

    def close(self, grace_s: float = 5.0) -> None:
        """Teardown: SIGTERM whatever is left, SIGKILL after ``grace_s``."""
        if self._proc is None:
            return
        if self._finalizer is not None:
            self._finalizer.detach()
        _children.terminate(self._proc, grace_s)
        self._join_readers(timeout=5.0)

    # -- logs --------------------------------------------------------------

    @property
    def logs(self) -> list[LogRecord]:
        with self._cond:
            return list(self._records)

    @property
    def non_json_lines(self) -> list[str]:
        with self._cond:
            return list(self._non_json)

    def stderr_text(self) -> str:
        with self._cond:
            return "".join(self._stderr)

    def mark(self) -> int:
        """Position in the log; pass as ``since`` to wait only for later records."""
        with self._cond:
            return len(self._records)

    def wait_for_log(self, predicate: LogPredicate, timeout: float, since: int = 0) -> LogRecord:
        """Return the first record from index ``since`` on that satisfies ``predicate``.

        Fails fast with the log tail if the daemon's stdout closes (it exited)
        before a match, instead of waiting out the whole timeout.
        """
        end = time.monotonic() + timeout
        checked = since
        with self._cond:
            while True:
                for record in self._records[checked:]:
                    if predicate(record):
                        return record
                checked = max(checked, len(self._records))
                if self._stdout_eof:
                    raise AssertionError(f"daemon exited before the expected log record\n{self.describe()}")
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected log record not seen within {timeout}s\n{self.describe()}")
                self._cond.wait(remaining)

    def wait_for_event(self, event: str, timeout: float, since: int = 0, **fields: Any) -> LogRecord:
        """``wait_for_log`` for structlog's ``event`` name plus exact key/value matches."""
        return self.wait_for_log(
            lambda r: r.get("event") == event and all(r.get(k) == v for k, v in fields.items()),
            timeout,
            since,
        )

    def describe(self, tail: int = 30) -> str:
        """Exit status plus the last log records and stderr, for assertion messages."""
        code = self._proc.poll() if self._proc is not None else None
        with self._cond:
            records = [json.dumps(r, default=str) for r in self._records[-tail:]]
            other = self._non_json[-tail:]
            stderr = "".join(self._stderr)[-4000:]
        parts = [f"returncode={code} args={self.args}", "--- last log records:", *records]
        if other:
            parts += ["--- non-JSON stdout:", *other]
        if stderr:
            parts += ["--- stderr:", stderr]
        return "\n".join(parts)

    # -- internals ---------------------------------------------------------

    def _require(self) -> subprocess.Popen[Any]:
        if self._proc is None:
            raise RuntimeError("daemon not started")
        return self._proc

    def _join_readers(self, timeout: float) -> None:
        # Readers end at EOF; a grandchild holding the pipe could delay that, so bound it.
        for reader in self._readers:
            reader.join(timeout)

    def _read_stdout(self, stream: IO[str]) -> None:
        with stream:
            for line in stream:
                text = line.rstrip("\n")
                try:
                    parsed = json.loads(text)
                except ValueError:
                    parsed = None
                with self._cond:
                    if isinstance(parsed, dict):
                        self._records.append(parsed)
                    elif text:
                        self._non_json.append(text)
                    self._cond.notify_all()
        with self._cond:
            self._stdout_eof = True
            self._cond.notify_all()

    def _read_stderr(self, stream: IO[str]) -> None:
        with stream:
            for line in stream:
                with self._cond:
                    self._stderr.append(line)


def thread_count(pid: int) -> int:
    """Threads of ``pid`` right now, from /proc (to catch thread leaks across reconnects)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Threads: line for pid {pid}")


def fd_count(pid: int) -> int:
    """Open file descriptors of ``pid`` right now (to catch socket/file leaks)."""
    return len(os.listdir(f"/proc/{pid}/fd"))
