"""Typed, frozen records that cross stage boundaries.

Stages never share mutable state: a capture thread hands a `Frame` to the detector, the detector hands an
`Inference` to the event stage, and the event stage hands a `DefectEvent` to the outbox. Frozen dataclasses
make that contract explicit (numpy arrays inside are treated as read-only by convention and by flag).
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def rfc3339(moment: dt.datetime) -> str:
    """RFC 3339 UTC with millisecond precision and a `Z` suffix, the form subscribers parse most easily."""
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A frame made ready for the model off the detector's thread: letterboxed to the model's input, RGB."""

    tensor: Image  # 3xHxW RGB, contiguous: float32 0..1 for a CPU model, else uint8 (converted on the device)


@dataclass(frozen=True, slots=True)
class Frame:
    camera_id: str
    seq: int  # per-camera frame number, from 0, as the source delivered it (dropped frames keep their gap)
    image: Image  # HxWx3 BGR uint8, write-protected
    captured_mono: float  # time.monotonic() when read: for latency and intervals
    captured_utc: dt.datetime  # wall clock when read: for payloads only
    prepared: Prepared | None = None  # the model's input, made by the capture thread; None: the detector makes it

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


class EndOfStream(enum.Enum):
    """Sentinel put on a hand-off when a stage stops, so the consumer never blocks forever."""

    TOKEN = "end-of-stream"


END_OF_STREAM = EndOfStream.TOKEN


class CameraState(enum.Enum):
    CONNECTING = "connecting"
    ONLINE = "online"
    RECONNECTING = "reconnecting"
    STALLED = "stalled"  # a native call is stuck; the process is about to exit for a restart
    OFFLINE = "offline"


class EndReason(str, enum.Enum):
    """Why a defect's track ended (`end_reason` of its `end` event)."""

    GONE = "gone"  # unseen for LINEWATCH_EVENTS__TRACK_LOST_FRAMES
    END_OF_STREAM = "end_of_stream"  # a finite source ended
    SHUTDOWN = "shutdown"
    RESOLUTION_CHANGE = "resolution_change"  # the camera came back at another size


@dataclass(frozen=True, slots=True)
class CameraStatus:
    camera_id: str
    state: CameraState
    reason: str
    at: dt.datetime
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class BBox:
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True, slots=True)
class Detection:
    label: str
    class_id: int
    confidence: float
    bbox: BBox  # pixels in the frame's own coordinates


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    sha256: str  # of the weights file: identifies exactly which model produced an event
    imgsz: int
    device: str
    classes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Inference:
    frame: Frame
    detections: tuple[Detection, ...]  # already filtered by the confidence threshold
    inference_ms: float


@dataclass(frozen=True, slots=True)
class DefectEvent:
    """A frame with at least one detection, ready to be numbered (seq) and stored in the outbox."""

    event_id: str
    camera_id: str
    frame_seq: int
    captured_utc: dt.datetime
    captured_mono: float
    width: int
    height: int
    model: ModelInfo
    detections: tuple[Detection, ...]
    inference_ms: float
