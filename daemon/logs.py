"""structlog setup: JSON lines on stdout (console renderer on a TTY with format=auto). No log files.

Configured once, from `cli.main()`. Standard-library loggers (paho, Ultralytics) are routed through the same
renderer with `ProcessorFormatter`. OpenCV and FFmpeg write from C++ straight to file descriptor 2, which no
Python logger sees; `NativeStderrRelay` captures that descriptor and re-emits each line as a record.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from daemon.redact import redact_values

# Ultralytics installs its own handler on import; we take these loggers over so their lines are JSON too.
_FOREIGN_LOGGERS = ("ultralytics", "paho", "amqtt", "transitions", "passlib")


def _add_thread(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    event.setdefault("thread", threading.current_thread().name)
    return event


def _redact(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """No credential reaches the log: a camera URL, an FFmpeg line or an exception may carry one."""
    for key, value in event.items():
        if isinstance(value, str | dict | list | tuple):
            event[key] = redact_values(value)
    return event


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """`level`: debug|info|warning|error; `fmt`: json|console|auto (console on a TTY)."""
    out = stream or sys.stdout
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),  # stdlib `extra={...}` fields (the outbox's drop reports) become keys
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        _add_thread,
    ]
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if use_console
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    adopt_foreign_loggers()


def adopt_foreign_loggers() -> None:
    """Strip the handlers libraries install on import, so their records reach our root handler as JSON."""
    for name in _FOREIGN_LOGGERS:
        foreign = logging.getLogger(name)
        for old in list(foreign.handlers):
            foreign.removeHandler(old)
        foreign.propagate = True
        foreign.setLevel(logging.NOTSET)  # the root's level decides


def get_logger(name: str) -> Any:
    return structlog.stdlib.get_logger(name)


class NativeStderrRelay:
    """Turns what native code writes to fd 2 (OpenCV, FFmpeg, CUDA) into structured log records.

    Without it a container runtime gets a mix of JSON and bare C++ lines that no collector can parse.
    The original stderr is kept and restored by `stop()`.
    """

    def __init__(self, logger_name: str = "native") -> None:
        self._log = get_logger(logger_name)
        self._saved_fd: int | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        sys.stderr.flush()
        read_fd, write_fd = os.pipe()
        self._saved_fd = os.dup(2)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._thread = threading.Thread(target=self._pump, args=(read_fd,), name="log:native-stderr", daemon=True)
        self._thread.start()

    def _pump(self, read_fd: int) -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            buffered = b""
            while chunk := pipe.read(4096):
                buffered += chunk
                *lines, buffered = buffered.split(b"\n")
                for raw in lines:
                    if text := raw.decode("utf-8", "replace").strip():
                        self._log.warning("native_stderr", line=text)
            if text := buffered.decode("utf-8", "replace").strip():
                self._log.warning("native_stderr", line=text)

    def write_original(self, text: str) -> None:
        """Write to the stderr we replaced (config errors found after start-up belong there, not in the log)."""
        if self._saved_fd is None:
            sys.stderr.write(text)
            sys.stderr.flush()
        else:
            os.write(self._saved_fd, text.encode())

    def stop(self) -> None:
        if self._saved_fd is None:
            return
        sys.stderr.flush()
        os.dup2(self._saved_fd, 2)  # closes the pipe's last write end, so the pump sees EOF
        os.close(self._saved_fd)
        self._saved_fd = None
        if self._thread is not None:
            self._thread.join(timeout=2.0)
