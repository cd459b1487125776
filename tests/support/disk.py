"""A small real filesystem that fills up: a tmpfs of a given size (mounting needs root; CI and the sessions run
as root, elsewhere the test is skipped)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_tmpfs(mount: Path, size: str, *, filler_kib: int = 0) -> Iterator[Path]:
    """Mount a tmpfs of `size` (e.g. "1m") at `mount`; `filler_kib` of it taken by someone else's file."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True)
    try:
        if filler_kib:
            (mount / "someone-elses.log").write_bytes(b"\0" * filler_kib * 1024)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
