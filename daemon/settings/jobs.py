"""Inspection jobs' settings (LINEWATCH_JOBS__*, or per camera LINEWATCH_CAMERAS__<ID>__JOBS__*): models only."""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from daemon.settings.base import Section


class JobsSettings(Section):
    enabled: bool = Field(False, description="Inspection jobs: a verdict (pass/ng/unknown) per trigger")
    window_ms: float = Field(0.0, ge=0, le=60_000, description="Or: every frame captured within this time of the "
                             "trigger (FRAMES=0)")
    frames: int = Field(3, ge=0, le=1000, description="Frames a job covers from its trigger on (0: use WINDOW_MS)")
    confirm_hits: int = Field(2, ge=1, le=1000, description="Frames of the window a defect class must be seen in "
                              "for NG (capped at FRAMES)")
    min_confidence: float = Field(0.4, gt=0, le=1, description="A sighting counts for a job from this confidence "
                                  "(the same class in CONFIRM_HITS frames confirms it; LINEWATCH_RULES__* thresholds "
                                  "are the defect events')")
    timeout_ms: float = Field(2000.0, ge=10, le=600_000, description="Trigger to verdict at most; then UNKNOWN")
    max_frame_age_ms: float = Field(1000.0, gt=0, le=600_000, description="Capture to inspection at most for a "
                                    "frame to count as on time")
    max_dropped_frames: int = Field(0, ge=0, le=1000, description="Frames of the window the detector may skip "
                                    "before the verdict is UNKNOWN")
    roi: str = Field("0,0,1,1", max_length=200, description="Inspection region x1,y1,x2,y2 as fractions of the "
                     "frame (or a JSON list): a defect counts when its box's centre is inside")
    max_open: int = Field(8, ge=1, le=64, description="Jobs open at once; a trigger beyond is answered UNKNOWN "
                          "(trigger_overrun)")

    @field_validator("max_dropped_frames")
    @classmethod
    def _some_frame_inspected(cls, value: int, info: ValidationInfo) -> int:
        frames = info.data.get("frames")
        if frames and value >= frames:
            raise ValueError(f"must be less than FRAMES ({frames}): a pass needs at least one inspected frame")
        return value

    @field_validator("timeout_ms")
    @classmethod
    def _longer_than_the_window(cls, value: float, info: ValidationInfo) -> float:
        if value <= (info.data.get("window_ms") or 0):
            raise ValueError("must be longer than WINDOW_MS: the window has to end before the deadline")
        return value

    @field_validator("roi")
    @classmethod
    def _roi_in_frame(cls, value: str) -> str:
        parse_roi(value)
        return value

    @field_validator("frames")
    @classmethod
    def _a_window(cls, value: int, info: ValidationInfo) -> int:
        if value == 0 and not info.data.get("window_ms"):
            raise ValueError("a job needs a window: FRAMES > 0, or FRAMES=0 and WINDOW_MS > 0")
        return value


def parse_roi(text: str) -> tuple[float, float, float, float]:
    """"0.25,0,0.75,0.5" or "[0.25, 0, 0.75, 0.5]": four fractions with x1 < x2 and y1 < y2."""
    try:
        values = tuple(float(part) for part in text.strip().removeprefix("[").removesuffix("]").split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(0.0 <= v <= 1.0 for v in values) or values[0] >= values[2] or (
            values[1] >= values[3]):
        raise ValueError("give four fractions x1,y1,x2,y2 from 0 to 1, with x1 < x2 and y1 < y2")
    return values[0], values[1], values[2], values[3]
