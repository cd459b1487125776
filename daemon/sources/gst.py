"""GStreamer pipelines (gst://… ! appsink): hardware decode on a Jetson (nvv4l2decoder) or VA-API on x86.

Needs an OpenCV built with GStreamer (JetPack's is; the PyPI wheel is not). Without it the source fails
fatally with a clear message instead of falling back to something slower behind the user's back.

Jetson:  gst://rtspsrc location=rtsp://cam/stream latency=200 protocols=tcp ! rtph264depay ! h264parse !
         nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR !
         appsink drop=true max-buffers=1 sync=false
x86:     gst://rtspsrc location=rtsp://cam/stream latency=200 protocols=tcp ! rtph264depay ! h264parse !
         avdec_h264 ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false
"""

from __future__ import annotations

import re
from typing import Any

import cv2

from daemon.redact import redact
from daemon.sources.base import SourceFatal
from daemon.sources.opencv import CaptureSource


def opencv_has_gstreamer() -> bool:
    match = re.search(r"GStreamer:\s*(\w+)", cv2.getBuildInformation())
    return bool(match and match.group(1).upper() == "YES")


class GstSource(CaptureSource):
    def __init__(self, pipeline: str) -> None:
        super().__init__()
        self._pipeline = pipeline
        self.description = f"gst {redact(pipeline)[:120]}"

    def _open_capture(self) -> Any:
        if not opencv_has_gstreamer():
            raise SourceFatal(
                "this OpenCV build has no GStreamer support (PyPI wheels do not); install an OpenCV built with "
                "GStreamer (JetPack's) or use an rtsp:// URL"
            )
        return cv2.VideoCapture(self._pipeline, cv2.CAP_GSTREAMER)
