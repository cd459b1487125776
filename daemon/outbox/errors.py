"""Outbox failures, sorted into retryable and fatal, and SQLite's errors translated into them."""

from __future__ import annotations

import sqlite3


class OutboxError(Exception):
    """Fatal outbox failure: bad file, newer schema, closed, misuse."""


class OutboxRetryableError(OutboxError):
    """The transaction was rolled back; the same call may succeed later (back off, then retry)."""


class OutboxFullError(OutboxRetryableError):
    """Disk full or the max_file_bytes ceiling reached."""


class OutboxCorruptError(OutboxError):
    """The file is not a SQLite database or is damaged."""


class PayloadTooLargeError(OutboxError):
    """One rendered payload alone exceeds max_bytes; it was not stored."""


# SQLite primary result codes (stable C ABI; sqlite3.SQLITE_* only exist from 3.11).
_PRIMARY_CODE_ERRORS: dict[int, type[OutboxError]] = {
    13: OutboxFullError,  # SQLITE_FULL
    5: OutboxRetryableError,  # SQLITE_BUSY: another connection held the write lock past busy_timeout
    6: OutboxRetryableError,  # SQLITE_LOCKED
    10: OutboxRetryableError,  # SQLITE_IOERR: SQLite rolled back; the device may recover
    11: OutboxCorruptError,  # SQLITE_CORRUPT
    26: OutboxCorruptError,  # SQLITE_NOTADB
}
# Python 3.10 has no sqlite_errorcode; fall back to SQLite's fixed messages.
_MESSAGE_ERRORS: tuple[tuple[str, type[OutboxError]], ...] = (
    ("disk is full", OutboxFullError),
    ("database is locked", OutboxRetryableError),
    ("disk i/o error", OutboxRetryableError),
    ("not a database", OutboxCorruptError),
    ("malformed", OutboxCorruptError),
)
_HINTS: dict[type[OutboxError], str] = {
    OutboxFullError: "; nothing was written, retry after freeing space",
    OutboxCorruptError: "; move the file aside (keep it for forensics) and restart to create an empty outbox",
}


def translate(exc: sqlite3.Error, context: str) -> OutboxError:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        # Extended codes (e.g. SQLITE_IOERR_WRITE) carry the primary code in the low byte.
        cls = _PRIMARY_CODE_ERRORS.get(code & 0xFF, OutboxError)
    else:
        text = str(exc).lower()
        cls = next((c for m, c in _MESSAGE_ERRORS if m in text), OutboxError)
    return cls(f"{context}: {exc}{_HINTS.get(cls, '')}")
