"""The C allocator's settings that keep a long-running daemon's memory flat (glibc only; elsewhere nothing).

Every frame is a large buffer (640x480 BGR is 900 KiB; a 5 MP one 15 MiB), made and freed on several threads
many times a second. glibc serves allocations above its mmap threshold (128 KiB) with mmap, which returns
them to the kernel on free, but it raises that threshold each time such a block is freed, up to 32 MiB. After
that, frames come from the per-thread heaps ("arenas", up to eight per core), whose free space is fragmented
and seldom returned: resident memory grows in small steps for hours (measured: 0.42 MB/min over 25 minutes
with two cameras). Fixing the threshold (which also stops the dynamic adjustment) keeps frames on mmap, and two
arenas bound the fragmentation the pipeline's threads can cause. bench/soak.py measures the result.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024  # glibc's own default, no longer allowed to grow
TRIM_THRESHOLD = 256 * 1024
ARENA_MAX = 2
# The variables glibc reads at start-up: if the operator set one, that choice stands (and with malloc tunables
# in GLIBC_TUNABLES, every choice is the operator's: nothing is set here).
_ENV = {"MALLOC_MMAP_THRESHOLD_": M_MMAP_THRESHOLD, "MALLOC_TRIM_THRESHOLD_": M_TRIM_THRESHOLD,
        "MALLOC_ARENA_MAX": M_ARENA_MAX}


def tune_allocator() -> dict[str, int]:
    """Apply the settings above (call before the pipeline's threads start). Returns what was set, by glibc's
    environment-variable name; empty when the C library is not glibc (musl, macOS) or refused."""
    name = ctypes.util.find_library("c")
    if name is None or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return {}
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018  # glibc only: musl has mallopt as a stub that does nothing
    except (OSError, AttributeError):
        return {}
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    wanted = {"MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD, "MALLOC_TRIM_THRESHOLD_": TRIM_THRESHOLD,
              "MALLOC_ARENA_MAX": ARENA_MAX}
    applied = {}
    for variable, value in wanted.items():
        if variable in os.environ:
            continue
        if mallopt(_ENV[variable], value) == 1:
            applied[variable] = value
    return applied
