"""Shared OpenCV VideoCapture handling for the RTSP, V4L2, file and GStreamer sources."""

from __future__ import annotations

import os
import threading
from typing import Any

import cv2
import numpy as np

from daemon.buffers import BufferPool
from daemon.frames import Image
from daemon.sources.base import SourceUnavailable

# OPENCV_FFMPEG_CAPTURE_OPTIONS is read by OpenCV when a capture opens and is process-wide: opens that set it
# are serialised so two cameras with different transports cannot see each other's value.
_FFMPEG_ENV_LOCK = threading.Lock()


class CaptureSource:
    """Owns one cv2.VideoCapture. Subclasses say how to open it."""

    description = "opencv"

    def __init__(self) -> None:
        self._capture: Any = None
        # Frames decode into arrays that nothing holds any more (buffers.py): no page faults per frame
        self._buffers = BufferPool()
        self._shape: tuple[int, ...] | None = None  # the last frame's, the likely next one's

    @property
    def pace_fps(self) -> float | None:
        return None

    def _open_capture(self) -> Any:
        raise NotImplementedError

    def open(self) -> None:
        self.close()
        capture = self._open_capture()
        if capture is None or not capture.isOpened():
            if capture is not None:
                capture.release()
            raise SourceUnavailable(f"cannot open {self.description}")
        self._capture = capture

    def read(self) -> Image | None:
        if self._capture is None:
            raise SourceUnavailable(f"{self.description} is not open")
        into = self._buffers.free(self._shape) if self._shape is not None else None
        ok, image = self._capture.read(into) if into is not None else self._capture.read()
        if not ok or image is None:
            return self._end_of_frames()
        if image is not into:  # the first frame, a new size, or every buffer still in use downstream
            self._shape = image.shape
            self._buffers.adopt(image.shape, image)
        return _as_bgr(image)

    def _end_of_frames(self) -> Image | None:
        """A failed read on a live source is an outage; files override this to mean end of stream."""
        raise SourceUnavailable(f"read failed or timed out on {self.description}")

    def close(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()

    def property(self, prop: int) -> float:
        return float(self._capture.get(prop)) if self._capture is not None else 0.0


def open_ffmpeg(target: str, *, options: str | None, params: list[int]) -> Any:
    with _FFMPEG_ENV_LOCK:
        saved = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
        if options:
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = options
        try:
            return cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
        finally:
            if saved is None:
                os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
            else:
                os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = saved


def _as_bgr(image: Any) -> Image:
    array = np.asarray(image)
    if array.ndim == 2:  # some V4L2 formats decode to grey
        array = cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    elif array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_BGRA2BGR)
    if array.dtype != np.uint8:
        raise SourceUnavailable(f"unsupported pixel type {array.dtype}")
    return array
