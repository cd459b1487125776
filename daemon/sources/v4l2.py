"""V4L2 cameras (/dev/videoN) through OpenCV's V4L2 backend.

Containers need the device passed in (`--device /dev/video0`) and the `video` group; systemd needs
`DeviceAllow=char-video4linux rw` and `SupplementaryGroups=video` (see systemd/linewatch.service).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2

from daemon.sources.base import SourceFatal, SourceUnavailable
from daemon.sources.opencv import CaptureSource


class V4l2Source(CaptureSource):
    def __init__(
        self,
        device: str,
        *,
        fourcc: str | None,
        width: int | None,
        height: int | None,
        fps: float | None,
        exposure: float | None,
        wait_for_device: bool,
    ) -> None:
        super().__init__()
        self._device = device
        self._fourcc = fourcc
        self._size = (width, height)
        self._fps = fps
        self._exposure = exposure
        self._wait_for_device = wait_for_device
        self.description = f"v4l2 {device}"

    def _open_capture(self) -> Any:
        path = Path(self._device)
        if not path.exists():
            message = f"V4L2 device {self._device} does not exist (unplugged, or not passed into the container)"
            # A missing device is a wiring/configuration problem: fail loudly unless told to wait for it.
            raise SourceUnavailable(message) if self._wait_for_device else SourceFatal(message)
        if not os.access(path, os.R_OK | os.W_OK):
            raise SourceFatal(f"V4L2 device {self._device}: permission denied (add the user to group 'video')")
        capture = cv2.VideoCapture(self._device, cv2.CAP_V4L2)
        if not capture.isOpened():
            capture.release()
            raise SourceUnavailable(f"V4L2 device {self._device} cannot be opened (busy, or not a capture device)")
        # Order matters for many UVC drivers: format first, then size, then rate.
        if self._fourcc:
            capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*self._fourcc))
        if self._size[0]:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self._size[0])
        if self._size[1]:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self._size[1])
        if self._fps:
            capture.set(cv2.CAP_PROP_FPS, self._fps)
        if self._exposure is not None:
            capture.set(cv2.CAP_PROP_AUTO_EXPOSURE, 1)  # V4L2 "manual" mode; not every camera allows it
            capture.set(cv2.CAP_PROP_EXPOSURE, self._exposure)
        return capture
