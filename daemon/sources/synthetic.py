"""synthetic://line?… : the generated conveyor scene as a camera (the line itself: daemon/synthetic/)."""

from __future__ import annotations

from daemon.frames import Image
from daemon.synthetic.line import LineParams, SyntheticLine


class SyntheticSource:
    def __init__(self, url: str) -> None:
        self.params = LineParams.from_url(url)
        self._line = SyntheticLine(self.params)
        self._index = 0  # the render index; equals the frame seq, so ground truth can be re-rendered from events
        self._trigger: int | None = None
        self.description = f"synthetic line seed={self.params.seed}"

    @property
    def pace_fps(self) -> float | None:
        return self.params.fps if self.params.realtime else None

    def open(self) -> None:
        """Nothing to open; a re-open continues where the stream was."""

    def read(self) -> Image | None:
        if self.params.frames and self._index >= self.params.frames:
            return None
        image = self._line.render(self._index).image
        self._trigger = self._line.photo_eye(self._index) if self.params.photo_eye else None
        self._index += 1
        return image

    def take_trigger(self) -> str | None:
        """The part id the photo-eye saw with the frame just read (photo_eye=true), else None."""
        trigger, self._trigger = self._trigger, None
        return None if trigger is None else str(trigger)

    def close(self) -> None:
        """Nothing to release."""
