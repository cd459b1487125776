"""Video files: decoded with FFmpeg, paced at their own fps or read as fast as possible, optionally looped."""

from __future__ import annotations

from typing import Any

import cv2

from daemon.frames import Image
from daemon.sources.base import SourceFatal
from daemon.sources.opencv import CaptureSource, open_ffmpeg


class FileSource(CaptureSource):
    def __init__(self, path: str, *, loop: bool, realtime: bool) -> None:
        super().__init__()
        self._path = path
        self._loop = loop
        self._realtime = realtime
        self._fps: float | None = None
        self._frames_this_pass = 0
        self.description = f"file {path}"

    @property
    def pace_fps(self) -> float | None:
        return self._fps if self._realtime else None

    def _open_capture(self) -> Any:
        capture = open_ffmpeg(self._path, options=None, params=[])
        fps = float(capture.get(cv2.CAP_PROP_FPS)) if capture.isOpened() else 0.0
        self._fps = fps if 0.0 < fps < 1000.0 else 25.0
        self._frames_this_pass = 0
        return capture

    def read(self) -> Image | None:
        image = super().read()
        self._frames_this_pass += image is not None
        return image

    def _end_of_frames(self) -> Image | None:
        if not self._loop:
            return None
        if self._frames_this_pass == 0:
            raise SourceFatal(f"{self.description} has no decodable frames; refusing to loop on it")
        self.open()  # re-open rather than seek: seeking is unreliable for some containers
        return super().read()
