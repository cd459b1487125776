"""Builds the FrameSource that a camera URL names, from plain options (sources never read the settings)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from daemon.sources.base import FrameSource
from daemon.sources.url import CameraUrl, SourceKind


@dataclass(frozen=True)
class SourceOptions:
    """What a source needs besides its URL; the composition root fills it from the camera's settings."""

    rtsp_transport: str = "tcp"
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    loop: bool = False
    realtime: bool = True  # video files: at their fps (True) or as fast as they decode
    fourcc: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    exposure: float | None = None
    wait_for_device: bool = False
    username: str | None = None  # RTSP: instead of the URL's user
    password_file: Path | None = None  # RTSP: the password, read at each open (a rotated secret is picked up)
    trigger: str = "free_run"  # GenICam: free_run | software | hardware
    trigger_source: str = "Line0"
    pixel_format: str | None = None
    gain: float | None = None
    packet_size: int | None = None


def build_source(url: CameraUrl, options: SourceOptions) -> FrameSource:
    if url.kind is SourceKind.RTSP:
        from daemon.sources.rtsp import RtspSource

        return RtspSource(url.target, transport=options.rtsp_transport, open_timeout_s=options.open_timeout_s,
                          read_timeout_s=options.read_timeout_s, username=options.username,
                          password_file=options.password_file)
    if url.kind is SourceKind.V4L2:
        from daemon.sources.v4l2 import V4l2Source

        return V4l2Source(url.target, fourcc=options.fourcc, width=options.width, height=options.height,
                          fps=options.fps, exposure=options.exposure, wait_for_device=options.wait_for_device)
    if url.kind is SourceKind.FILE:
        from daemon.sources.file import FileSource

        return FileSource(url.target, loop=options.loop, realtime=options.realtime)
    if url.kind is SourceKind.GENICAM:
        from daemon.sources.genicam import GenicamOptions, GenicamSource, TriggerMode

        return GenicamSource(url.target, GenicamOptions(
            TriggerMode(options.trigger), options.trigger_source, options.pixel_format, options.exposure, options.gain,
            options.packet_size, options.fps, options.width, options.height, options.open_timeout_s,
            options.read_timeout_s))
    if url.kind is SourceKind.GSTREAMER:
        from daemon.sources.gst import GstSource

        return GstSource(url.target)
    from daemon.sources.synthetic import SyntheticSource

    return SyntheticSource(url.target)
