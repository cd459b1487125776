"""Synthetic production line, its parameters and ground truth types (no OpenCV: a camera URL parses without it).

The line: a seeded, deterministic conveyor scene that carries its own ground truth.

Machined metal plates and printed circuit boards ride a conveyor belt from left to right in two lanes. A
fraction of the parts carries defects (see `CLASS_NAMES`). Every frame is a pure function of the parameters
and the frame index, so any frame can be re-rendered later, byte for byte, to score what a model found in it.

URL form (the daemon's camera source): ``synthetic://line?fps=15&seed=3&defect_rate=0.5``. Every parameter
is optional; an unknown parameter or a bad value is refused with a one-line `ValueError`.

==============  ========  ==========================================================================
parameter       default   meaning (accepted values)
==============  ========  ==========================================================================
fps             15        frames per second the daemon paces at (0 < fps <= 1000)
width           640       frame width in pixels (160..4096)
height          480       frame height in pixels (120..4096); parts and lanes scale with the height
speed           8         conveyor speed in pixels PER FRAME (0..200); 8 px at 15 fps = 120 px/s.
                          Per frame, not per second, so that the scene does not depend on the pacing.
parts           both      which parts ride the belt: plates | pcbs | both
defect_rate     0.3       fraction of parts that carry at least one defect (0..1)
min_defect_px   20        smallest defect size, longest side in pixels (6..400)
max_defect_px   64        largest defect size (min_defect_px..400); sizes are clamped to fit the part
seed            0         scene seed (integer >= 0): part looks, defects, lighting and noise
noise           4         sensor noise, standard deviation in grey levels (0..50)
blur            3         longest horizontal motion-blur kernel in pixels; each frame draws 1..blur
                          (0..31; 0 or 1 = no blur)
lighting        0.5       amount of lighting variation: global gain, gradient, colour cast (0..1)
frames          0         0 = endless stream; N = the stream ends after N frames (0..10^12)
realtime        true      true = pace at fps; false = as fast as the consumer takes frames
                          (true/false, 1/0, yes/no, on/off)
photo_eye       false     a photo-eye on the upper lane at the frame's centre line: the frame in which a
                          part's centre crosses it triggers an inspection job for that part (its part_id
                          is the line's part id), as a PLC's sensor would (true/false, ...)
==============  ========  ==========================================================================

Ground truth: `LineFrame.defects` lists a defect only when at least `MIN_VISIBLE_FRACTION` of its box lies
inside the frame (the box is then clipped to the frame); `LineFrame.parts` lists every part with any visible
pixel. Boxes are in pixels, continuous coordinates (x2, y2 exclusive), frame-relative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]

CLASS_NAMES: tuple[str, ...] = ("scratch", "dent", "stain", "missing_component")
SCRATCH, DENT, STAIN, MISSING_COMPONENT = range(4)
# A dent on a PCB or a missing component on a plain plate would not be a plausible defect.
CLASSES_BY_KIND: dict[str, tuple[int, ...]] = {
    "plate": (SCRATCH, DENT, STAIN),
    "pcb": (SCRATCH, STAIN, MISSING_COMPONENT),
}
MIN_VISIBLE_FRACTION = 0.5
PART_KINDS = {"plates": ("plate",), "pcbs": ("pcb",), "both": ("plate", "pcb")}


@dataclass(frozen=True, slots=True)
class LineParams:
    fps: float = 15.0
    width: int = 640
    height: int = 480
    speed: float = 8.0
    parts: str = "both"
    defect_rate: float = 0.3
    min_defect_px: int = 20
    max_defect_px: int = 64
    seed: int = 0
    noise: float = 4.0
    blur: int = 3
    lighting: float = 0.5
    frames: int = 0
    realtime: bool = True
    photo_eye: bool = False

    def __post_init__(self) -> None:
        _check("fps", 0 < self.fps <= 1000, self.fps, "a number > 0 and <= 1000")
        _check("width", 160 <= self.width <= 4096, self.width, "an integer 160..4096")
        _check("height", 120 <= self.height <= 4096, self.height, "an integer 120..4096")
        _check("speed", 0 <= self.speed <= 200, self.speed, "pixels per frame, 0..200")
        _check("parts", self.parts in PART_KINDS, self.parts, "plates, pcbs or both")
        _check("defect_rate", 0 <= self.defect_rate <= 1, self.defect_rate, "a fraction 0..1")
        _check("min_defect_px", 6 <= self.min_defect_px <= 400, self.min_defect_px, "an integer 6..400")
        _check(
            "max_defect_px",
            self.min_defect_px <= self.max_defect_px <= 400,
            self.max_defect_px,
            f"an integer {self.min_defect_px} (min_defect_px)..400",
        )
        _check("seed", self.seed >= 0, self.seed, "an integer >= 0")
        _check("noise", 0 <= self.noise <= 50, self.noise, "grey levels 0..50")
        _check("blur", 0 <= self.blur <= 31, self.blur, "an integer 0..31")
        _check("lighting", 0 <= self.lighting <= 1, self.lighting, "an amount 0..1")
        _check("frames", 0 <= self.frames <= 10**12, self.frames, "0 (endless) or a frame count")

    @classmethod
    def from_url(cls, url: str) -> LineParams:
        """Parse ``synthetic://line?fps=15&seed=3&...``; the error names the parameter and what is accepted."""
        parts = urlsplit(url)
        if parts.scheme != "synthetic" or parts.netloc != "line" or parts.path not in ("", "/"):
            raise ValueError(f"synthetic source: expected synthetic://line?name=value&..., got {url!r}")
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, object] = {}
        for name, raw in parse_qsl(parts.query, keep_blank_values=True):
            if name not in types:
                raise ValueError(f"synthetic source: unknown parameter {name!r}; accepted: {', '.join(types)}")
            if name in values:
                raise ValueError(f"synthetic source: parameter {name!r} is given more than once")
            values[name] = _parse_value(name, str(types[name]), raw)
        return cls(**values)  # type: ignore[arg-type]  # each value was parsed to its field's type

    def to_url(self) -> str:
        """The URL that `from_url` turns back into these parameters (non-default values only)."""
        default = LineParams()
        query = "&".join(
            f"{f.name}={_format_value(getattr(self, f.name))}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        )
        return "synthetic://line" + (f"?{query}" if query else "")


def _check(name: str, ok: bool, value: object, accepted: str) -> None:
    if not ok:
        raise ValueError(f"synthetic source: parameter {name!r} = {value!r} is out of range; accepted: {accepted}")


_BOOLS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def _parse_value(name: str, type_name: str, raw: str) -> object:
    try:
        if type_name == "float":
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError
            return value
        if type_name == "int":
            return int(raw)
        if type_name == "bool":
            return _BOOLS[raw.strip().lower()]
        return raw
    except (ValueError, KeyError):
        accepted = {"float": "a number", "int": "an integer", "bool": "true/false, 1/0, yes/no or on/off"}
        raise ValueError(
            f"synthetic source: parameter {name!r} = {raw!r} is not valid; accepted: {accepted[type_name]}"
        ) from None


def _format_value(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True, slots=True)
class TruthBox:
    """One visible defect, in frame pixels."""

    part_id: int
    class_id: int
    label: str
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True, slots=True)
class PartTruth:
    """The visible part of one part in one frame (clipped to the frame)."""

    part_id: int
    kind: str  # "plate" | "pcb"
    defective: bool  # carries defects, whether or not they are visible in this frame
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True, slots=True)
class LineFrame:
    index: int
    image: Image  # HxWx3 uint8 BGR, read-only
    defects: tuple[TruthBox, ...]
    parts: tuple[PartTruth, ...]
