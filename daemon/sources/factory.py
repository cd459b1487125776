"""Builds the FrameSource that a camera URL names."""

from __future__ import annotations

from daemon.settings import CameraSettings
from daemon.sources.base import FrameSource
from daemon.sources.url import SourceKind


def build_source(camera: CameraSettings) -> FrameSource:
    url = camera.source
    if url.kind is SourceKind.RTSP:
        from daemon.sources.rtsp import RtspSource

        return RtspSource(
            url.target,
            transport=camera.rtsp_transport,
            open_timeout_s=camera.open_timeout_s,
            read_timeout_s=camera.read_timeout_s,
        )
    if url.kind is SourceKind.V4L2:
        from daemon.sources.v4l2 import V4l2Source

        return V4l2Source(
            url.target,
            fourcc=camera.fourcc,
            width=camera.width,
            height=camera.height,
            fps=camera.fps,
            exposure=camera.exposure,
            wait_for_device=camera.wait_for_device,
        )
    if url.kind is SourceKind.FILE:
        from daemon.sources.file import FileSource

        return FileSource(url.target, loop=camera.loop, realtime=camera.pace == "realtime")
    if url.kind is SourceKind.GSTREAMER:
        from daemon.sources.gst import GstSource

        return GstSource(url.target)
    from daemon.sources.synthetic import SyntheticSource

    return SyntheticSource(url.target)
