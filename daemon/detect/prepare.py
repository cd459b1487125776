"""A frame made ready for the model on its camera's capture thread: Ultralytics' letterbox, written into reused
arrays.

Ultralytics' LetterBox resizes the frame, pads it with a border (a new array), and the predictor then flips BGR
to RGB, moves channels first and divides by 255 (a third array, four bytes a pixel). Here the resized frame and
the model's input come from the capture thread's buffer pool (daemon/buffers.py), the border is painted once
when an input array is made (the same frame size always leaves the same border), and each frame writes only the
picture's own region: the flip, the transpose and the scaling in one numpy pass, with the same float32
arithmetic as before, so the input is the same to the bit.

The geometry (resized size and border) is Ultralytics' own (LetterBox.get_params), once per frame size, and the
first frame of each size is also letterboxed by Ultralytics' LetterBox and compared: a release whose letterbox
differs from this one (or that lacks get_params) keeps its own path for that size, with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from daemon.buffers import BufferPool
from daemon.frames import Image
from daemon.logs import get_logger

log = get_logger("linewatch.model")

SCALE = np.float32(1 / 255)
Tensor = npt.NDArray[Any]  # uint8 or float32


@dataclass(frozen=True)
class _Geometry:
    width: int  # the resized picture, before the border
    height: int
    top: int
    left: int
    shape: tuple[int, int, int]  # the model's input: 3 x H x W


class Letterboxer:
    def __init__(self, letterbox: Any, *, as_float: bool) -> None:
        self._letterbox = letterbox  # Ultralytics' LetterBox, as its predictor builds it for this model
        self.as_float = as_float  # a CPU model in FP32: scaled to 0..1 here; otherwise uint8, scaled on the device
        self._padding = int(getattr(letterbox, "padding_value", 114))
        self._geometry: dict[tuple[int, ...], _Geometry | None] = {}  # None: Ultralytics' own path for that size

    def __call__(self, image: Image, pool: BufferPool | None = None) -> Tensor:
        """The model's input for one BGR frame: 3 x H x W, RGB, contiguous; float32 0..1 or uint8."""
        geometry = self.geometry(image)
        if geometry is None:
            return self._ultralytics(image)
        return self._fill(image, geometry, pool)

    def geometry(self, image: Image) -> _Geometry | None:
        """This image size's letterbox (checked against Ultralytics' at its first use); None: Ultralytics' own."""
        shape = image.shape
        if shape not in self._geometry:
            self._geometry[shape] = self._check(image)
        return self._geometry[shape]

    def many(self, images: list[Image], pool: BufferPool | None = None) -> Tensor | tuple[Tensor, ...]:
        """The inputs of several pictures of one size (a camera's tiles), written in order into one array reused
        from `pool` (its border painted when it is made): that array, the batch as the model takes it. A size
        Ultralytics letterboxes itself gives one input per picture instead."""
        if not images:
            return ()
        geometry = self.geometry(images[0])
        if geometry is None or any(image.shape != images[0].shape for image in images):
            return tuple(self(image, pool) for image in images)
        dtype = np.float32 if self.as_float else np.uint8
        count = len(images)
        block = self._blank(geometry, count) if pool is None else pool.take(
            ("inputs", count, geometry, dtype), lambda: self._blank(geometry, count))
        for index, image in enumerate(images):
            self._fill(image, geometry, pool, block[index])
        return block

    def _ultralytics(self, image: Image) -> Tensor:
        padded: Tensor = self._letterbox(image=image)
        chw = padded[..., ::-1].transpose(2, 0, 1)  # BGR to RGB, channels first
        if self.as_float:
            return np.multiply(chw, SCALE, dtype=np.float32, order="C")
        return np.ascontiguousarray(chw)

    def _fill(self, image: Image, geometry: _Geometry, pool: BufferPool | None,
              block: Tensor | None = None) -> Tensor:
        width, height = geometry.width, geometry.height
        picture: Tensor = image
        if image.shape[:2] != (height, width):
            into = None if pool is None else pool.take(("resized", height, width),
                                                       lambda: np.empty((height, width, 3), np.uint8))
            picture = cv2.resize(image, (width, height), dst=into, interpolation=self._letterbox.interpolation)
        dtype = np.float32 if self.as_float else np.uint8
        out = block if block is not None else self._blank(geometry) if pool is None else pool.take(
            ("input", geometry, dtype), lambda: self._blank(geometry))
        region = out[:, geometry.top:geometry.top + height, geometry.left:geometry.left + width]
        rgb_chw = picture[..., ::-1].transpose(2, 0, 1)
        if self.as_float:
            np.multiply(rgb_chw, SCALE, out=region, dtype=np.float32)
        else:
            np.copyto(region, rgb_chw)
        return out

    def _blank(self, geometry: _Geometry, count: int | None = None) -> Tensor:
        shape = geometry.shape if count is None else (count, *geometry.shape)
        border = np.full(shape, self._padding, dtype=np.uint8)
        return np.multiply(border, SCALE, dtype=np.float32) if self.as_float else border

    def _check(self, image: Image) -> _Geometry | None:
        """This size's geometry, or None when only Ultralytics' own letterbox will do (checked on this frame)."""
        get_params = getattr(self._letterbox, "get_params", None)
        if get_params is None or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            return None
        params = get_params({"img": image})
        new_width, new_height = params["new_unpad"]
        top, left = int(params["top"]), int(params["left"])
        total = (3, new_height + top + int(params["bottom"]), new_width + left + int(params["right"]))
        geometry = _Geometry(int(new_width), int(new_height), top, left, total)
        if not np.array_equal(self._fill(image, geometry, None), self._ultralytics(image)):
            log.warning("letterbox_fallback", frame_shape=list(image.shape),
                        reason="this Ultralytics release letterboxes differently; its own letterbox is used")
            return None
        return geometry
