"""The buffer pool: an array is handed out again only once nothing else holds it (a frame in a hand-off, a view
of it, a defect's best view), never blocks, and keeps at most `slots` arrays."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.buffers import BufferPool


def _make() -> np.ndarray:
    return np.zeros((480, 640, 3), np.uint8)


def test_an_array_nothing_holds_is_handed_out_again_writeable() -> None:
    pool = BufferPool()
    first = pool.take("frame", _make)
    first.setflags(write=False)  # as the capture stage hands frames on
    address = first.ctypes.data
    del first
    again = pool.take("frame", _make)
    assert again.ctypes.data == address and again.flags.writeable
    assert (pool.made, pool.reused) == (1, 1)


@pytest.mark.parametrize("holder", ["the array", "a view of it", "a list (a queue, a track's best view)"])
def test_an_array_still_held_anywhere_is_never_handed_out(holder: str) -> None:
    pool = BufferPool()
    first = pool.take("frame", _make)
    first[:] = 7
    kept = {"the array": first, "a view of it": first[10:20, ::-1], "a list (a queue, a track's best view)": [first]}
    held = kept[holder]
    del first, kept
    second = pool.take("frame", _make)
    second[:] = 9  # writing the new one must not touch the one still held
    assert pool.made == 2
    inner = held[0] if isinstance(held, list) else held
    assert int(inner.min()) == int(inner.max()) == 7


def test_another_key_is_another_array() -> None:
    pool = BufferPool()
    small = pool.take(("input", 320), lambda: np.zeros((3, 320, 320), np.float32))
    del small
    large = pool.take(("input", 640), lambda: np.zeros((3, 640, 640), np.float32))
    assert large.shape == (3, 640, 640) and pool.made == 2


def test_the_pool_keeps_at_most_slots_arrays_and_makes_more_when_all_are_busy() -> None:
    pool = BufferPool(slots=3)
    busy = [pool.take("frame", _make) for _ in range(5)]
    assert pool.size == 3 and pool.made == 5
    del busy
    freed = [pool.take("frame", _make) for _ in range(3)]
    assert pool.made == 5 and pool.reused == 3, "the three kept arrays come back; nothing new is made"
    assert len({array.ctypes.data for array in freed}) == 3


def test_a_full_pool_swaps_a_free_array_of_an_old_size_for_a_new_one() -> None:
    pool = BufferPool(slots=2)
    old = [pool.take("vga", _make) for _ in range(2)]
    del old  # the camera came back at another size: its old frames are free
    hd = np.zeros((1080, 1920, 3), np.uint8)
    pool.adopt("hd", hd)
    del hd
    assert pool.free("hd") is not None and pool.size == 2


def test_a_view_is_not_adopted() -> None:
    pool = BufferPool()
    base = _make()
    pool.adopt("frame", base[:, :320])
    assert pool.size == 0


def test_slots_must_be_positive() -> None:
    with pytest.raises(ValueError, match="slots"):
        BufferPool(slots=0)
