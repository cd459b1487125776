"""Reusing a stage's large arrays (decoded frames, the model's input) instead of allocating each frame anew.

A 640x480 frame is 900 KiB and its float input for the model 1.2 MiB. The allocator keeps blocks this large on
mmap (ops/memory.py: that keeps the daemon's memory flat), so each new one costs page faults: the kernel maps
and zeroes about 600 pages per frame, 0.8 ms of system CPU per frame at 640x480 on this project's machine
(bench/box_limit.py), more than the daemon's own Python. A pool hands the same arrays out again once nothing
holds them any more, so a camera's frames cycle through a few buffers: no page faults, and no fragmentation.

An array is free when the pool's own reference is the only one left: a frame still waiting in a hand-off, on
its way through the model, kept as a defect's best view or a snapshot, or any view of it, holds a reference.
Python's reference count says so exactly (under the GIL, a count at the pool's own references means no other
thread can reach the array to take a new one). A pool belongs to one thread; it never blocks: when every array
is in use, it makes a new one, and keeps it only while it has fewer than `slots`. So a pool holds as many
arrays as its stage once had in flight at the same time, never more than `slots`: what it keeps is memory the
pipeline was using anyway at its peak. A live camera has four or five in flight; a file read at full speed up
to twice its read-ahead (8 waiting in its hand-off, 8 in the model's batches: detect/stage.py) and the frames
its event stage keeps, so a pool's default room is 32: past it, every frame would cost page faults again.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Hashable

import numpy as np

_probe = [np.empty(1)]
# The references an array held by a pool alone shows, counted by the same expression as the pool's own check
# (the list's reference and the call's argument): 2 on CPython today, measured so as not to assume it.
_IDLE_REFS = sys.getrefcount(_probe[0])
del _probe


class BufferPool:
    def __init__(self, slots: int = 32) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self._keys: list[Hashable] = []
        self._arrays: list[np.ndarray] = []
        self.made = 0  # arrays made because none was free (bench and tests read it)
        self.reused = 0

    @property
    def size(self) -> int:
        """Arrays kept (no __len__: an empty pool must not read as false where None is meant)."""
        return len(self._arrays)

    def free(self, key: Hashable) -> np.ndarray | None:
        """A pooled array made for `key` that nothing else holds, writeable again; None when there is none."""
        for index in range(len(self._arrays)):
            if self._keys[index] == key and sys.getrefcount(self._arrays[index]) <= _IDLE_REFS:
                array = self._arrays[index]
                array.setflags(write=True)  # a stage hands its frames on read-only; the pool owns them again
                self.reused += 1
                return array
        return None

    def take(self, key: Hashable, make: Callable[[], np.ndarray]) -> np.ndarray:
        """A free array made for `key`, or a new one from `make` (kept for reuse while there is room)."""
        array = self.free(key)
        if array is None:
            array = make()
            self.made += 1
            self.adopt(key, array)
        return array

    def adopt(self, key: Hashable, array: np.ndarray) -> None:
        """Keep an array made elsewhere (a decoder's) for reuse under `key`: in a free slot, or in place of a free
        array of another key (a camera that came back at another size), or not at all when every slot is busy."""
        if not array.flags.owndata:
            return  # a view: its base is what would need to be free
        if len(self._arrays) < self.slots:
            self._keys.append(key)
            self._arrays.append(array)
            return
        for index in range(len(self._arrays)):
            if self._keys[index] != key and sys.getrefcount(self._arrays[index]) <= _IDLE_REFS:
                self._keys[index], self._arrays[index] = key, array
                return
