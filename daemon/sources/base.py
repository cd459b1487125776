"""The FrameSource protocol and the two kinds of source failure.

A source only opens, reads and closes. Retrying, pacing, numbering and timestamps belong to the capture
stage, so every kind of camera gets the same reconnect and watchdog behaviour.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from daemon.frames import Image


class Idle(enum.Enum):
    """What a triggered camera's read returns while no frame is due: the link is fine, the camera is waiting."""

    TOKEN = "idle"


IDLE = Idle.TOKEN


class SourceError(Exception):
    """Base of source failures."""


class SourceUnavailable(SourceError):
    """Retryable: the camera is unreachable, stalled or sent garbage. The capture stage backs off and retries."""


class SourceFatal(SourceError):
    """Not retryable: the configuration can never work (missing device with retries off, no GStreamer)."""


class FrameSource(Protocol):
    description: str  # for logs; never contains credentials

    @property
    def pace_fps(self) -> float | None:
        """Deliver at this rate (files at their own fps); None: as fast as the source gives frames."""

    def open(self) -> None:
        """Open the device or stream. Raises SourceUnavailable or SourceFatal."""

    def read(self) -> Image | Idle | None:
        """The next frame (BGR uint8); None at the end of a finite source; IDLE from a triggered camera that is
        waiting for its trigger (returned at least every second, so that a stop is noticed). Raises
        SourceUnavailable."""

    def close(self) -> None:
        """Release native resources. Idempotent."""


class TriggeredSource(Protocol):
    """A source whose frames may come with a trigger (a photo-eye, a camera's hardware trigger line): the capture
    stage asks after each read and starts an inspection job for that frame."""

    def take_trigger(self) -> str | None:
        """The part id of a trigger that came with the frame just read ('' for one without an id), else None."""


@dataclass(frozen=True, slots=True)
class Fired:
    """The frame just read was the `index`-th exposed for job `job_id` (software trigger)."""

    job_id: str
    index: int


class FiredSource(Protocol):
    """A software-triggered camera: the capture stage asks after each read which job the frame was fired for, and
    how many frames the camera lost (incomplete) since the last read, which leave a gap in the frame numbers."""

    def fire(self, job_id: str, count: int) -> bool:
        """Queue `count` exposures for the job (thread-safe). False: not queued."""

    def take_fired(self) -> Fired | None:
        """The shot (job id, index in the job) the frame just read answers, else None."""

    def take_lost(self) -> int:
        """Frames lost since the last call."""
