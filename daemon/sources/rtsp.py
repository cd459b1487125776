"""RTSP cameras through OpenCV's FFmpeg backend, with open and read deadlines."""

from __future__ import annotations

import time
from typing import Any

import cv2

from daemon.frames import Image
from daemon.sources.base import SourceUnavailable
from daemon.sources.opencv import CaptureSource, open_ffmpeg, redact


class RtspSource(CaptureSource):
    def __init__(self, url: str, *, transport: str, open_timeout_s: float, read_timeout_s: float) -> None:
        super().__init__()
        self._url = url
        self._transport = transport
        self._open_ms = int(open_timeout_s * 1000)
        self._open_timeout_s = open_timeout_s
        self._read_ms = int(read_timeout_s * 1000)
        self._read_timeout_s = read_timeout_s
        self.description = f"rtsp {redact(url)} ({transport})"

    def _open_capture(self) -> Any:
        # TCP by default: UDP loses packets under load and smears H.264 frames, which a detector sees as
        # defects. The deadlines stop FFmpeg from blocking forever on a black-holed or stalled camera.
        # analyzeduration: probing 0.5 s instead of FFmpeg's 5 s default cuts the (re)connect time from ~3 s
        # to under 1 s, which is most of a camera's time back after an outage.
        options = f"rtsp_transport;{self._transport}|analyzeduration;500000|fflags;nobuffer|max_delay;500000"
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self._open_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, self._read_ms]
        return open_ffmpeg(self._url, options=options, params=params)

    def open(self) -> None:
        # OpenCV reports every failed open alike; say when it was the deadline, so the log tells a camera
        # that hangs or speaks no RTSP (a timeout) from one that refused or answered with an error (fast).
        started = time.monotonic()
        try:
            super().open()
        except SourceUnavailable:
            if time.monotonic() - started < self._open_timeout_s:
                raise
            raise SourceUnavailable(
                f"no RTSP answer within the {self._open_timeout_s:g} s open timeout on {self.description}"
            ) from None

    def read(self) -> Image | None:
        # When the read deadline fires, OpenCV drains the decoder and returns one of the frames it still
        # holds (frame threading delays output by up to one frame per decoder thread) with ok=True. Those
        # frames are stale, and taking them as fresh made a hung camera cost (1 + threads) x the read
        # deadline to notice (6 s instead of 2 s on 2 cores; more on a many-core box). A read that lasted the
        # whole deadline therefore counts as a timeout, whatever it returned.
        started = time.monotonic()
        image = super().read()
        waited = time.monotonic() - started
        if waited >= self._read_timeout_s:
            raise SourceUnavailable(
                f"no frame within the {self._read_timeout_s:g} s read timeout on {self.description}"
            )
        return image
