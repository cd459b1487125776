"""RTSP cameras through OpenCV's FFmpeg backend, with open and read deadlines."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cv2

from daemon.files import read_secret
from daemon.frames import Image
from daemon.redact import redact_url
from daemon.sources.base import SourceUnavailable
from daemon.sources.opencv import CaptureSource, open_ffmpeg


def with_credentials(url: str, username: str | None, password: str | None) -> str:
    """`url` with this user and password in its userinfo, percent-encoded (FFmpeg decodes them), so a password
    may hold any character. A None keeps what the URL has."""
    scheme, rest = url.split("://", 1)
    authority, slash, path = rest.partition("/")
    userinfo, _, hostport = authority.rpartition("@")
    user, colon, secret = userinfo.partition(":")
    if username is not None:
        user = quote(username, safe="")
    if password is not None:
        secret, colon = quote(password, safe=""), ":"
    if not (user or colon):
        return url
    return f"{scheme}://{user}{colon}{secret}@{hostport}{slash}{path}"


class RtspSource(CaptureSource):
    def __init__(self, url: str, *, transport: str, open_timeout_s: float, read_timeout_s: float,
                 username: str | None = None, password_file: Path | None = None) -> None:
        super().__init__()
        self._url = url
        self._username = username
        self._password_file = password_file
        self._transport = transport
        self._open_ms = int(open_timeout_s * 1000)
        self._open_timeout_s = open_timeout_s
        self._read_ms = int(read_timeout_s * 1000)
        self._read_timeout_s = read_timeout_s
        self.description = f"rtsp {redact_url(url)} ({transport})"

    def _open_capture(self) -> Any:
        # TCP by default: UDP loses packets under load and smears H.264 frames, which a detector sees as
        # defects. The deadlines stop FFmpeg from blocking forever on a black-holed or stalled camera.
        # analyzeduration: probing 0.5 s instead of FFmpeg's 5 s default cuts the (re)connect time from ~3 s
        # to under 1 s, which is most of a camera's time back after an outage.
        options = f"rtsp_transport;{self._transport}|analyzeduration;500000|fflags;nobuffer|max_delay;500000"
        # One decoder thread: FFmpeg's frame threading holds one frame back per extra thread (a whole frame interval
        # of latency on 2 cores, more on a many-core box); a camera's decode is its own thread anyway, and cameras
        # decode side by side.
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self._open_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, self._read_ms,
                  cv2.CAP_PROP_N_THREADS, 1]
        return open_ffmpeg(self._credentialed_url(), options=options, params=params)

    def _credentialed_url(self) -> str:
        """The URL with the password read now from its file (a rotated or corrected secret is picked up)."""
        password = None
        if self._password_file is not None:
            try:
                password = read_secret(self._password_file)
            except ValueError as exc:  # gone or unreadable: retried with backoff like any failed open
                raise SourceUnavailable(f"camera password file: {exc}") from None
        return with_credentials(self._url, self._username, password)

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
