"""The letterbox made on the capture thread (daemon/detect/prepare.py) gives the model exactly the input that
Ultralytics' LetterBox and its predictor's conversion give, for every frame size, into reused arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from ultralytics.data.augment import LetterBox

from daemon.buffers import BufferPool
from daemon.detect.prepare import SCALE, Letterboxer

SIZES = [(480, 640), (640, 480), (1080, 1920), (256, 320), (320, 320), (517, 333), (1944, 2592), (7, 900)]


def _ultralytics(letterbox: LetterBox, image: np.ndarray, as_float: bool) -> np.ndarray:
    """What the daemon fed the model before: Ultralytics' letterbox, BGR to RGB, channels first, /255."""
    chw = letterbox(image=image)[..., ::-1].transpose(2, 0, 1)
    return np.multiply(chw, SCALE, dtype=np.float32, order="C") if as_float else np.ascontiguousarray(chw)


def _frame(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("as_float", [True, False], ids=["float32 (CPU)", "uint8 (GPU)"])
@pytest.mark.parametrize("auto", [True, False], ids=["rectangular (.pt, dynamic)", "square (fixed export)"])
@pytest.mark.parametrize(("height", "width"), SIZES)
def test_the_input_is_ultralytics_own_to_the_bit(height: int, width: int, auto: bool, as_float: bool) -> None:
    letterbox = LetterBox((320, 320), auto=auto, stride=32)
    letterboxer = Letterboxer(letterbox, as_float=as_float)
    pool = BufferPool()
    for seed in range(3):  # the same arrays again: each frame must overwrite the last one's picture
        image = _frame(height, width, seed)
        got = letterboxer(image, pool)
        want = _ultralytics(letterbox, image, as_float)
        assert got.dtype == want.dtype and got.shape == want.shape and got.flags.c_contiguous
        assert np.array_equal(got, want)
        del got
    assert pool.reused >= 2, "the model's input and the resized picture come from the pool after the first frame"


def test_frames_still_held_keep_their_own_input() -> None:
    letterboxer = Letterboxer(LetterBox((320, 320), auto=True, stride=32), as_float=True)
    pool = BufferPool()
    first_image, second_image = _frame(480, 640, 1), _frame(480, 640, 2)
    first = letterboxer(first_image, pool)
    kept = first.copy()
    second = letterboxer(second_image, pool)  # `first` is still held (a frame waiting for the detector)
    assert first.ctypes.data != second.ctypes.data
    assert np.array_equal(first, kept)


class _OldLetterBox:
    """An Ultralytics release without LetterBox.get_params."""

    def __init__(self) -> None:
        self._inner = LetterBox((320, 320), auto=True, stride=32)
        self.interpolation = self._inner.interpolation

    def __call__(self, image: np.ndarray) -> Any:
        return self._inner(image=image)


class _OtherLetterBox(LetterBox):
    """A release whose letterbox paints its border differently from what get_params says."""

    def __call__(self, labels: Any = None, image: Any = None) -> Any:
        out = super().__call__(labels, image=image)
        out[0, 0] = 0
        return out


@pytest.mark.parametrize("letterbox", [_OldLetterBox(), _OtherLetterBox((320, 320), auto=True, stride=32)],
                         ids=["no get_params", "a different border"])
def test_a_release_that_letterboxes_otherwise_keeps_its_own_letterbox(letterbox: Any) -> None:
    letterboxer = Letterboxer(letterbox, as_float=True)
    image = _frame(480, 640, 3)
    chw = letterbox(image=image)[..., ::-1].transpose(2, 0, 1)
    assert np.array_equal(letterboxer(image, BufferPool()), np.multiply(chw, SCALE, dtype=np.float32, order="C"))
