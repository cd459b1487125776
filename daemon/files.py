"""The bounded reader of small files (credentials, certificates, rules, env files). Ground floor."""

from __future__ import annotations

import os
import stat
from pathlib import Path

# Certificates, keys, passwords and rules files are small. A bound keeps /dev/zero or a mistyped path to a
# video from being read into memory until the kernel kills us.
SECRET_FILE_MAX_BYTES = 1024 * 1024


def stat_or_none(path: Path) -> os.stat_result | None:
    """The path's status, or None when nothing is there. ValueError (one line) when the question itself fails: a
    name too long, a loop of links, a folder this user may not search."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ValueError(f"{str(path)[:200]!r}: {exc.strerror or exc}") from None


def is_regular_file(path: Path) -> bool:
    info = stat_or_none(path)
    return info is not None and stat.S_ISREG(info.st_mode)


def read_small_file(path: Path, limit: int = SECRET_FILE_MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. ValueError (one line) for anything else.

    Opened non-blocking, so a FIFO cannot hang us; checked on the open descriptor, so a file swapped after a
    check cannot slip through; read with a bound, so a file that grows meanwhile cannot either.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise ValueError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = ("a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode)
                    else "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "not a file")
            raise ValueError(f"{str(path)!r} is {kind}; give a regular file")
        if info.st_size > limit:
            raise ValueError(f"{str(path)!r} is {info.st_size} bytes; a certificate, key or password file is at most "
                             f"{limit // 1024} KiB")
        data = b""
        while len(data) <= limit and (chunk := os.read(fd, limit + 1 - len(data))):
            data += chunk
    except OSError as exc:  # /proc/self/mem is a "regular file" that cannot be read
        raise ValueError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"{str(path)!r} is larger than {limit // 1024} KiB")
    return data


def read_secret(path: Path) -> str:
    """A password file's text: UTF-8, without the trailing newline an editor or `echo` adds."""
    return read_small_file(path).decode("utf-8", "replace").rstrip("\r\n")
