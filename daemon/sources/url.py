"""Camera URL parsing: which kind of source, and a stable default camera id.

Accepted forms:
  rtsp://[user:pass@]host[:port]/path   (also rtsps://)
  /dev/videoN  or  v4l2:///dev/videoN    (V4L2 device)
  file:///path/video.mp4  or a bare path (video file)
  synthetic://line?param=value&…         (generated conveyor scene; see daemon/synthetic/line.py)
  gst://<GStreamer pipeline ending in appsink>
  genicam://[serial | device id | address]  (GigE Vision / USB3 Vision through Aravis; empty: the first camera)
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from daemon.files import is_regular_file
from daemon.redact import redact_url

ACCEPTED = (
    "rtsp://host[:port]/path, /dev/videoN or v4l2:///dev/videoN, file:///path/video.mp4 or a path, "
    "synthetic://line?…, gst://<pipeline ending in appsink>, genicam://[serial]"
)


class SourceKind(enum.Enum):
    RTSP = "rtsp"
    V4L2 = "v4l2"
    FILE = "file"
    SYNTHETIC = "synthetic"
    GSTREAMER = "gst"
    GENICAM = "genicam"


@dataclass(frozen=True)
class CameraUrl:
    kind: SourceKind
    raw: str
    target: str  # the URL for FFmpeg, the device path, the file path, the synthetic URL, the pipeline, or the
    # GenICam camera's serial number, device id or address ('' for the first camera found)
    realtime: bool = True  # synthetic://line: its own `realtime` parameter, as the line itself parsed it

    @property
    def default_id(self) -> str:
        """A stable id derived from the URL, safe as one MQTT topic level (no credentials in it)."""
        if self.kind is SourceKind.RTSP:
            parts = urlsplit(self.target)
            base = f"{parts.hostname or 'rtsp'}{'-' + str(parts.port) if parts.port else ''}{parts.path}"
        elif self.kind is SourceKind.V4L2:
            base = Path(self.target).name
        elif self.kind is SourceKind.FILE:
            base = Path(self.target).stem
        elif self.kind is SourceKind.SYNTHETIC:
            base = "synthetic-" + (urlsplit(self.target).netloc or "scene")
        elif self.kind is SourceKind.GENICAM:
            base = "genicam" + ("-" + self.target if self.target else "")
        else:
            base = "gst"
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-.") or self.kind.value

    def is_live(self, pace: str = "realtime") -> bool:
        """Live sources keep the newest frame (drop policy `latest`); files are read without loss."""
        if self.kind is SourceKind.FILE:
            return False
        if self.kind is SourceKind.SYNTHETIC:
            return self.realtime
        return True


def parse_camera_url(url: str) -> CameraUrl:
    """Classify a camera URL. Raises ValueError naming the accepted forms."""
    text = url.strip()
    if not text:
        raise ValueError(f"empty camera URL; accepted: {ACCEPTED}")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in ("rtsp", "rtsps"):
        if not urlsplit(text).hostname:
            raise ValueError(f"{redact_url(text)!r} has no host; accepted: rtsp://host[:port]/path")
        return CameraUrl(SourceKind.RTSP, url, text)
    if scheme == "v4l2" or (not scheme and re.fullmatch(r"/dev/video\d+", text)):
        device = unquote(urlsplit(text).path) if scheme else text
        if not re.fullmatch(r"/dev/[\w./-]+", device):
            raise ValueError(f"{text!r} names no device; accepted: /dev/videoN or v4l2:///dev/videoN")
        return CameraUrl(SourceKind.V4L2, url, device)
    if scheme == "synthetic":
        from daemon.synthetic.params import LineParams

        params = LineParams.from_url(text)  # raises ValueError naming the bad parameter
        return CameraUrl(SourceKind.SYNTHETIC, url, text, realtime=params.realtime)
    if scheme == "gst":
        pipeline = text[len("gst://") :]
        if "appsink" not in pipeline:
            raise ValueError("a gst:// pipeline must end in an appsink (… ! videoconvert ! appsink)")
        return CameraUrl(SourceKind.GSTREAMER, url, pipeline)
    if scheme == "genicam":
        selector = unquote(text[len("genicam://"):]).strip("/")
        if len(selector) > 128 or not selector.isprintable() or any(c in selector for c in "?/@ "):
            raise ValueError("a genicam:// camera is named by its serial number, device id or address "
                             "(genicam://<serial>), or not at all for the first camera found")
        return CameraUrl(SourceKind.GENICAM, url, selector)
    if scheme == "file" or not scheme:
        path = Path(unquote(urlsplit(text).path) if scheme else text)
        if not is_regular_file(path):
            raise ValueError(f"no video file at {str(path)!r}")
        return CameraUrl(SourceKind.FILE, url, str(path))
    raise ValueError(f"unsupported scheme {scheme + '://'!r}; accepted: {ACCEPTED}")
