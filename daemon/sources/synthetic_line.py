"""Synthetic production line: a seeded, deterministic conveyor scene that carries its own ground truth.

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
==============  ========  ==========================================================================

Ground truth: `LineFrame.defects` lists a defect only when at least `MIN_VISIBLE_FRACTION` of its box lies
inside the frame (the box is then clipped to the frame); `LineFrame.parts` lists every part with any visible
pixel. Boxes are in pixels, continuous coordinates (x2, y2 exclusive), frame-relative.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.uint8]

CLASS_NAMES: tuple[str, ...] = ("scratch", "dent", "stain", "missing_component")
SCRATCH, DENT, STAIN, MISSING_COMPONENT = range(4)
# A dent on a PCB or a missing component on a plain plate would not be a plausible defect.
_CLASSES_BY_KIND: dict[str, tuple[int, ...]] = {
    "plate": (SCRATCH, DENT, STAIN),
    "pcb": (SCRATCH, STAIN, MISSING_COMPONENT),
}
MIN_VISIBLE_FRACTION = 0.5
_PART_KINDS = {"plates": ("plate",), "pcbs": ("pcb",), "both": ("plate", "pcb")}
# Separate random streams, so that e.g. changing the noise model never changes which parts are defective.
_PART_TAG, _FRAME_TAG, _SCENE_TAG = 0x9A27, 0xF7A3, 0x5CE2
_NOISE_PAD = 64  # the noise bank is this much larger than a frame; each frame reads it at a random offset
_SPRITE_CACHE = 48  # parts on screen at once is ~6; the cache only has to span one pass of the belt


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

    def __post_init__(self) -> None:
        _check("fps", 0 < self.fps <= 1000, self.fps, "a number > 0 and <= 1000")
        _check("width", 160 <= self.width <= 4096, self.width, "an integer 160..4096")
        _check("height", 120 <= self.height <= 4096, self.height, "an integer 120..4096")
        _check("speed", 0 <= self.speed <= 200, self.speed, "pixels per frame, 0..200")
        _check("parts", self.parts in _PART_KINDS, self.parts, "plates, pcbs or both")
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


@dataclass(frozen=True, slots=True)
class _Geometry:
    part_id: int
    kind: str
    belt_x: int  # belt coordinate of the part's right edge: on screen it is at offset + width - belt_x
    y: int
    w: int
    h: int
    defective: bool


@dataclass(frozen=True, slots=True)
class _Part:
    geo: _Geometry
    sprite: Image
    mask: npt.NDArray[np.bool_]  # HxWx1, the part's silhouette (plates have chamfered corners)
    defects: tuple[tuple[int, int, int, int, int], ...]  # (class_id, x1, y1, x2, y2) in sprite pixels


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(key)))


class SyntheticLine:
    """Renders frames of the line. `render` is pure: the same (params, index) gives the same bytes."""

    def __init__(self, params: LineParams) -> None:
        self.params = params
        w, h, s = params.width, params.height, params.height / 480.0
        self._scale = s
        self._pitch = round(320 * s)  # belt distance between two parts of the same lane
        self._max_part_w = round(230 * s)
        self._jitter = max(0, self._pitch - self._max_part_w - round(30 * s))
        self._lanes = (round(0.29 * h), round(0.71 * h))
        self._cache: OrderedDict[int, _Part] = OrderedDict()
        self._lock = threading.Lock()  # the daemon's capture thread and a scorer may share one line
        rng = _rng(params.seed, _SCENE_TAG)
        self._belt = _draw_belt(rng, w, h, s)
        noise = np.rint(rng.standard_normal((h + _NOISE_PAD, w + _NOISE_PAD, 3), np.float32) * params.noise)
        # Signed noise as two saturating uint8 passes (cv2.add/subtract) is ~10x faster than int16 math.
        self._noise_up = np.clip(noise, 0, 255).astype(np.uint8)
        self._noise_down = np.clip(-noise, 0, 255).astype(np.uint8)

    def render(self, index: int) -> LineFrame:
        if index < 0:
            raise ValueError(f"frame index must be >= 0, got {index}")
        p, w, h = self.params, self.params.width, self.params.height
        offset = self._offset(index)
        period = self._belt.shape[1] - w
        start = (period - offset % period) % period  # the belt texture moves right with the parts
        img: npt.NDArray[Any] = np.ascontiguousarray(self._belt[:, start : start + w])  # cv2 retypes it
        parts = [self._part(g.part_id) for g in self._visible(offset)]
        for part in parts:
            self._blit(img, part, offset)
        rng = _rng(p.seed, _FRAME_TAG, index)
        kernel = int(rng.integers(1, p.blur + 1)) if p.blur > 1 else 1
        if kernel > 1:
            img = cv2.blur(img, (kernel, 1))
        amount = p.lighting
        corners = 1.0 + amount * rng.uniform(-0.2, 0.2) + amount * rng.uniform(-0.15, 0.15, (2, 2, 1))
        cast = 1.0 + amount * rng.uniform(-0.04, 0.04, (1, 1, 3))
        gain = cv2.resize(np.clip(corners * cast * 128, 0, 255).astype(np.uint8), (w, h))
        img = cv2.multiply(img, gain, scale=1 / 128)
        if p.noise > 0:
            dy, dx = (int(v) for v in rng.integers(0, _NOISE_PAD, 2))
            img = cv2.add(img, self._noise_up[dy : dy + h, dx : dx + w])
            img = cv2.subtract(img, self._noise_down[dy : dy + h, dx : dx + w])
        image = np.asarray(img, dtype=np.uint8)
        image.flags.writeable = False
        part_truth, defect_truth = self._truth(parts, offset)
        return LineFrame(index=index, image=image, defects=defect_truth, parts=part_truth)

    def truth(self, index: int) -> tuple[tuple[PartTruth, ...], tuple[TruthBox, ...]]:
        """The ground truth of frame `index`, as `render` gives it, without composing the image."""
        offset = self._offset(index)
        return self._truth([self._part(g.part_id) for g in self._visible(offset)], offset)

    def _offset(self, index: int) -> int:
        return math.floor(index * self.params.speed + 0.5)

    def _screen_x(self, geo: _Geometry, offset: int) -> int:
        return offset + self.params.width - geo.belt_x - geo.w

    def _visible(self, offset: int) -> list[_Geometry]:
        first_slot = max(0, (offset - self._max_part_w) // self._pitch - 1)
        last_slot = (offset + self.params.width) // self._pitch + 1
        visible = []
        for part_id in range(2 * first_slot, 2 * last_slot + 2):
            geo = self._geometry(_rng(self.params.seed, _PART_TAG, part_id), part_id)
            x = self._screen_x(geo, offset)
            if x < self.params.width and x + geo.w > 0:
                visible.append(geo)
        return visible

    def _geometry(self, rng: np.random.Generator, part_id: int) -> _Geometry:
        s, kinds = self._scale, _PART_KINDS[self.params.parts]
        kind = kinds[int(rng.integers(0, len(kinds)))]
        wide, tall = ((140, 220), (110, 170)) if kind == "plate" else ((150, 230), (110, 160))
        w = int(rng.integers(round(wide[0] * s), round(wide[1] * s) + 1))
        h = int(rng.integers(round(tall[0] * s), round(tall[1] * s) + 1))
        lane, slot = part_id % 2, part_id // 2
        belt_x = slot * self._pitch + lane * (self._pitch // 2) + int(rng.integers(0, self._jitter + 1))
        wobble = round(10 * s)
        y = self._lanes[lane] + int(rng.integers(-wobble, wobble + 1)) - h // 2
        defective = bool(rng.random() < self.params.defect_rate)
        return _Geometry(part_id, kind, belt_x, y, w, h, defective)

    def _part(self, part_id: int) -> _Part:
        with self._lock:
            cached = self._cache.get(part_id)
            if cached is not None:
                self._cache.move_to_end(part_id)
                return cached
        rng = _rng(self.params.seed, _PART_TAG, part_id)
        geo = self._geometry(rng, part_id)  # same draws as in _visible, then the look continues the stream
        part = _make_part(rng, geo, self.params, self._scale)
        with self._lock:
            self._cache[part_id] = part
            while len(self._cache) > _SPRITE_CACHE:
                self._cache.popitem(last=False)
        return part

    def _blit(self, img: Image, part: _Part, offset: int) -> None:
        geo, fw = part.geo, self.params.width
        x = self._screen_x(geo, offset)
        x1, x2 = max(0, x), min(fw, x + geo.w)
        sx1, sx2 = x1 - x, x2 - x
        shadow_dx, shadow_dy = round(5 * self._scale), round(7 * self._scale)
        shadow = img[geo.y + shadow_dy : geo.y + shadow_dy + geo.h, max(0, x1 + shadow_dx) : min(fw, x2 + shadow_dx)]
        np.right_shift(shadow, 1, out=shadow)
        roi = img[geo.y : geo.y + geo.h, x1:x2]
        np.copyto(roi, part.sprite[:, sx1:sx2], where=part.mask[:, sx1:sx2])

    def _truth(self, parts: list[_Part], offset: int) -> tuple[tuple[PartTruth, ...], tuple[TruthBox, ...]]:
        fw = self.params.width
        part_truth: list[PartTruth] = []
        defect_truth: list[TruthBox] = []
        for part in parts:
            geo = part.geo
            x = self._screen_x(geo, offset)
            part_truth.append(
                PartTruth(
                    geo.part_id, geo.kind, bool(part.defects), max(0, x), geo.y, min(fw, x + geo.w), geo.y + geo.h
                )
            )
            for class_id, dx1, dy1, dx2, dy2 in part.defects:
                left, right = x + dx1, x + dx2
                visible = max(0, min(fw, right) - max(0, left)) / (right - left)
                if visible >= MIN_VISIBLE_FRACTION:
                    defect_truth.append(
                        TruthBox(
                            geo.part_id,
                            class_id,
                            CLASS_NAMES[class_id],
                            max(0, left),
                            geo.y + dy1,
                            min(fw, right),
                            geo.y + dy2,
                        )
                    )
        return tuple(part_truth), tuple(defect_truth)


def _draw_belt(rng: np.random.Generator, w: int, h: int, s: float) -> Image:
    """A belt texture one cleat period wider than the frame, so each frame is a slice of it."""
    period = max(8, round(80 * s))
    top, bottom = round(30 * s), h - round(30 * s)
    tile = np.clip(58 + rng.normal(0, 5, (h, period)), 0, 255)
    tile[:, : max(2, round(6 * s))] -= 18  # cleat
    reps = (w + period) // period + 1
    belt = np.repeat(np.tile(tile, (1, reps))[:, : w + period, None], 3, axis=2)
    belt[:top] = belt[bottom:] = 0
    belt[:top] += np.array([150, 152, 155]) + rng.normal(0, 3, (top, w + period, 1))  # steel side rails
    belt[bottom:] += np.array([150, 152, 155]) + rng.normal(0, 3, (h - bottom, w + period, 1))
    return np.clip(belt, 0, 255).astype(np.uint8)


Rect = tuple[int, int, int, int]


def _make_part(rng: np.random.Generator, geo: _Geometry, p: LineParams, s: float) -> _Part:
    """Draw one part. Defect spots are reserved before the optional features (bolts, chips, passives), so a
    defective part always has room for its defects; the features then fill whatever space is left."""
    w, h = geo.w, geo.h
    mask = np.zeros((h, w), np.uint8)
    occupied: list[Rect] = []
    plate = geo.kind == "plate"
    sprite = _plate_base(rng, mask, occupied, s) if plate else _pcb_base(rng, mask, occupied, s)
    spots: list[tuple[int, int, int, int]] = []  # (class_id, cx, cy, size)
    if geo.defective:
        count = 1 + int(rng.random() < 0.3) + int(rng.random() < 0.1)
        classes = _CLASSES_BY_KIND[geo.kind]
        for _ in range(count):
            class_id = classes[int(rng.integers(0, len(classes)))]
            size = min(int(rng.integers(p.min_defect_px, p.max_defect_px + 1)), int(0.6 * min(w, h)))
            spot = _free_spot(rng, w, h, size, round(8 * s), occupied)
            while spot is None and size > 12:  # a crowded part gets a smaller defect rather than none
                size = max(12, round(size * 0.75))
                spot = _free_spot(rng, w, h, size, round(8 * s), occupied)
            if spot is not None:
                half = (size + 1) // 2
                occupied.append((spot[0] - half, spot[1] - half, spot[0] + half, spot[1] + half))
                spots.append((class_id, spot[0], spot[1], size))
    if plate:
        _plate_bolts(rng, sprite, occupied, s)
    else:
        _pcb_components(rng, sprite, occupied, s)
    defects: list[tuple[int, int, int, int, int]] = []
    for class_id, cx, cy, size in spots:
        local = np.zeros((h, w), np.uint8)
        _DRAW_DEFECT[class_id](rng, sprite, local, cx, cy, size, geo.kind)
        bx, by, bw, bh = cv2.boundingRect(local)
        defects.append((class_id, bx, by, bx + bw, by + bh))
    sprite.flags.writeable = False
    return _Part(geo, sprite, (mask > 0)[:, :, None], tuple(defects))


def _free_spot(
    rng: np.random.Generator, w: int, h: int, size: int, margin: int, occupied: list[Rect]
) -> tuple[int, int] | None:
    """A centre for a size x size square inside the part that keeps clear of features and other defects."""
    half = (size + 1) // 2
    lo_x, hi_x, lo_y, hi_y = margin + half, w - margin - half, margin + half, h - margin - half
    if lo_x > hi_x or lo_y > hi_y:
        return None
    for _ in range(40):
        cx, cy = int(rng.integers(lo_x, hi_x + 1)), int(rng.integers(lo_y, hi_y + 1))
        box = (cx - half - 4, cy - half - 4, cx + half + 4, cy + half + 4)
        if not any(box[0] < o[2] and o[0] < box[2] and box[1] < o[3] and o[1] < box[3] for o in occupied):
            return cx, cy
    return None


def _color(rng: np.random.Generator, base: tuple[int, int, int], spread: int) -> tuple[int, int, int]:
    b, g, r = (int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in base)
    return b, g, r


def _plate_base(rng: np.random.Generator, mask: Mask, occupied: list[Rect], s: float) -> Image:
    """Brushed steel with chamfered corners, bevelled edges, four through holes and an engraved serial."""
    h, w = mask.shape
    base = float(rng.uniform(145, 200))
    # Brushed metal: streaks along x, made by smearing per-row and per-pixel noise horizontally.
    grain = (base + rng.normal(0, 5, (h, 1)) + rng.normal(0, 4, (h, w))).astype(np.float32)
    tex = cv2.blur(grain, (max(3, round(21 * s)), 1))
    tint = np.array([1.0 + rng.uniform(0, 0.05), 1.0, 1.0 - rng.uniform(0, 0.05)], np.float32)
    sprite: Image = np.clip(tex[:, :, None] * tint, 0, 255).astype(np.uint8)
    c = round(rng.uniform(6, 16) * s)
    corners = [(c, 0), (w - 1 - c, 0), (w - 1, c), (w - 1, h - 1 - c), (w - 1 - c, h - 1), (c, h - 1), (0, h - 1 - c)]
    outline = np.array([*corners, (0, c)], np.int32)
    cv2.fillPoly(mask, [outline], 255)
    light, dark = (int(min(255, base + 45)),) * 3, (int(base * 0.55),) * 3
    cv2.polylines(sprite, [outline[[7, 0, 1]]], False, light, max(1, round(2 * s)))
    cv2.polylines(sprite, [outline[[3, 4, 5]]], False, dark, max(1, round(2 * s)))
    r = max(3, round(rng.uniform(6, 9) * s))
    inset = round(8 * s) + r
    for hx, hy in ((inset, inset), (w - inset, inset), (inset, h - inset), (w - inset, h - inset)):
        cv2.circle(sprite, (hx, hy), r, (42, 42, 44), -1, cv2.LINE_AA)  # through hole: belt shows through
        cv2.circle(sprite, (hx, hy), r, dark, 1, cv2.LINE_AA)
        occupied.append((hx - r, hy - r, hx + r, hy + r))
    text = f"LW-{int(rng.integers(1000, 9999))}"
    scale = 0.35 * s
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    tx, ty = round(w / 2 - tw / 2), h - round(10 * s)
    cv2.putText(sprite, text, (tx, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (int(base * 0.7),) * 3, 1, cv2.LINE_AA)
    occupied.append((tx, ty - th, tx + tw, ty + 2))
    return sprite


def _plate_bolts(rng: np.random.Generator, sprite: Image, occupied: list[Rect], s: float) -> None:
    """Up to two socket-head cap screws: dark round heads with a darker hex socket and a rim highlight.

    Distractors on purpose, but unlike any defect at the model's input scale (half the frame): an earlier
    light-grey hex head with a bright centre was, at 8-12 px, too close to a short bright scratch.
    """
    h, w = sprite.shape[:2]
    for _ in range(int(rng.integers(0, 3))):
        rb = max(5, round(rng.uniform(9, 13) * s))
        spot = _free_spot(rng, w, h, 2 * rb, round(6 * s), occupied)
        if spot is None:
            continue
        cv2.circle(sprite, spot, rb, _color(rng, (62, 64, 68), 8), -1, cv2.LINE_AA)
        cv2.circle(sprite, spot, rb, (118, 120, 124), 1, cv2.LINE_AA)
        rs = max(2, round(rb * 0.45))
        angles = rng.uniform(0, np.pi / 3) + np.arange(6) * np.pi / 3
        socket = np.stack([spot[0] + rs * np.cos(angles), spot[1] + rs * np.sin(angles)], 1).astype(np.int32)
        cv2.fillPoly(sprite, [socket], (24, 24, 26), cv2.LINE_AA)
        occupied.append((spot[0] - rb, spot[1] - rb, spot[0] + rb, spot[1] + rb))


def _pcb_base(rng: np.random.Generator, mask: Mask, occupied: list[Rect], s: float) -> Image:
    """Green solder mask over copper traces, with four gold-plated mounting holes."""
    h, w = mask.shape
    mask[:] = 255
    green = _color(rng, (45, 115, 35), 12)
    sprite = np.empty((h, w, 3), np.uint8)
    sprite[:] = green
    trace = tuple(min(255, c + 40) for c in green)
    for _ in range(int(rng.integers(6, 14))):  # copper traces under the solder mask: lighter green
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        points = [(x, y)]
        for _ in range(int(rng.integers(2, 5))):
            step = int(rng.integers(15, 60) * s) * int(rng.choice([-1, 1]))
            x, y = (x + step, y) if rng.random() < 0.5 else (x, y + step)
            points.append((x, y))
        cv2.polylines(sprite, [np.array(points, np.int32)], False, trace, max(1, round(2 * s)))
    r = max(3, round(6 * s))
    inset = round(6 * s) + r
    for hx, hy in ((inset, inset), (w - inset, inset), (inset, h - inset), (w - inset, h - inset)):
        cv2.circle(sprite, (hx, hy), r, (60, 165, 215), -1, cv2.LINE_AA)
        cv2.circle(sprite, (hx, hy), max(1, r // 2), (40, 40, 40), -1, cv2.LINE_AA)
        occupied.append((hx - r, hy - r, hx + r, hy + r))
    return sprite


def _pcb_components(rng: np.random.Generator, sprite: Image, occupied: list[Rect], s: float) -> None:
    """One to three mounted ICs (the look a missing component lacks) and a few passives."""
    h, w = sprite.shape[:2]
    for _ in range(int(rng.integers(1, 4))):
        size = round(rng.uniform(24, 56) * s)
        spot = _free_spot(rng, w, h, size, round(6 * s), occupied)
        if spot is not None:
            local = np.zeros((h, w), np.uint8)
            _footprint(rng, sprite, local, spot[0], spot[1], size, with_body=True)
            x, y, bw, bh = cv2.boundingRect(local)
            occupied.append((x, y, x + bw, y + bh))
    # Passives: tinned ends and a near-black body. A tan body read as a copper scratch at the model's scale.
    for _ in range(int(rng.integers(2, 6))):
        lw, sw = max(6, round(12 * s)), max(3, round(6 * s))
        bw, bh = (lw, sw) if rng.random() < 0.5 else (sw, lw)
        spot = _free_spot(rng, w, h, lw, round(6 * s), occupied)
        if spot is None:
            continue
        x, y = spot[0] - bw // 2, spot[1] - bh // 2
        cv2.rectangle(sprite, (x, y), (x + bw - 1, y + bh - 1), (185, 185, 190), -1)
        end = 2 if bw > bh else 0
        cv2.rectangle(
            sprite, (x + end, y + 2 - end), (x + bw - 1 - end, y + bh - 3 + end), _color(rng, (34, 34, 38), 6), -1
        )
        occupied.append((x, y, x + bw, y + bh))


def _footprint(
    rng: np.random.Generator, sprite: Image, local: Mask, cx: int, cy: int, size: int, with_body: bool
) -> None:
    """An IC footprint: silkscreen outline and two rows of tinned pads; a mounted chip covers the middle."""
    long_side, short_side = size, max(8, round(size * rng.uniform(0.45, 0.7)))
    horizontal = bool(rng.random() < 0.5)
    bw, bh = (long_side, short_side) if horizontal else (short_side, long_side)
    x1, y1 = cx - bw // 2, cy - bh // 2
    x2, y2 = x1 + bw - 1, y1 + bh - 1
    cv2.rectangle(local, (x1, y1), (x2, y2), 255, -1)
    cv2.rectangle(sprite, (x1, y1), (x2, y2), (225, 228, 230), 1)
    pads = max(3, long_side // 8)
    pitch = (long_side - 4) / pads
    pad_len = max(2, round(short_side * 0.22))
    for i in range(pads):
        a = round(2 + i * pitch + pitch * 0.2)
        b = round(2 + (i + 1) * pitch - pitch * 0.2)
        if horizontal:
            cv2.rectangle(sprite, (x1 + a, y1 + 2), (x1 + b, y1 + 1 + pad_len), (200, 202, 205), -1)
            cv2.rectangle(sprite, (x1 + a, y2 - 1 - pad_len), (x1 + b, y2 - 2), (200, 202, 205), -1)
        else:
            cv2.rectangle(sprite, (x1 + 2, y1 + a), (x1 + 1 + pad_len, y1 + b), (200, 202, 205), -1)
            cv2.rectangle(sprite, (x2 - 1 - pad_len, y1 + a), (x2 - 2, y1 + b), (200, 202, 205), -1)
    if with_body:
        inset = 2 + pad_len // 2
        body = (x1 + 2, y1 + inset, x2 - 2, y2 - inset) if horizontal else (x1 + inset, y1 + 2, x2 - inset, y2 - 2)
        cv2.rectangle(sprite, body[:2], body[2:], _color(rng, (28, 28, 30), 6), -1)
        cv2.circle(sprite, (body[0] + 4, body[1] + 4), 1, (150, 150, 150), -1)


def _scratch(rng: np.random.Generator, sprite: Image, local: Mask, cx: int, cy: int, size: int, kind: str) -> None:
    angle = rng.uniform(0, np.pi)
    ux, uy = np.cos(angle), np.sin(angle)
    thick = max(2, round(size / 22))
    core = _color(rng, (235, 238, 240), 12) if kind == "plate" else _color(rng, (70, 150, 225), 12)  # copper
    edge = (70, 70, 72) if kind == "plate" else (20, 45, 20)
    lines = [(0.0, 1.0, thick)]
    for _ in range(int(rng.integers(0, 3))):
        lines.append((float(rng.uniform(3, 6)) * rng.choice([-1, 1]), float(rng.uniform(0.4, 0.8)), max(1, thick - 1)))
    for shift, frac, t in lines:
        half = size * frac / 2 - t
        p1 = (round(cx - ux * half - uy * shift), round(cy - uy * half + ux * shift))
        p2 = (round(cx + ux * half - uy * shift), round(cy + uy * half + ux * shift))
        cv2.line(sprite, p1, p2, edge, t + 2, cv2.LINE_AA)
        cv2.line(sprite, p1, p2, core, t, cv2.LINE_AA)
        cv2.line(local, p1, p2, 255, t + 2)


def _dent(rng: np.random.Generator, sprite: Image, local: Mask, cx: int, cy: int, size: int, kind: str) -> None:
    rx = size / 2 - 1
    ry = rx * rng.uniform(0.65, 1.0)
    angle = rng.uniform(0, np.pi)
    cv2.ellipse(local, (cx, cy), (round(rx), round(ry)), np.degrees(angle), 0, 360, 255, -1)
    x, y, w, h = cv2.boundingRect(local)
    yy, xx = np.mgrid[y : y + h, x : x + w].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    u, v = dx * np.cos(angle) + dy * np.sin(angle), -dx * np.sin(angle) + dy * np.cos(angle)
    depth = np.clip(1 - (u / rx) ** 2 - (v / ry) ** 2, 0, 1)
    # Light from the top left: the near wall falls into shadow, the far wall catches the light.
    slope = (dx + dy) / (1.414 * rx)
    delta = (-45 * np.sqrt(depth) + 70 * slope * (depth > 0)) * (depth > 0)
    roi = sprite[y : y + h, x : x + w]
    shaded = np.clip(roi.astype(np.float32) + delta[:, :, None], 0, 255).astype(np.uint8)
    roi[:] = cv2.GaussianBlur(shaded, (3, 3), 0)


def _stain(rng: np.random.Generator, sprite: Image, local: Mask, cx: int, cy: int, size: int, kind: str) -> None:
    blob = np.zeros_like(local)
    for _ in range(int(rng.integers(3, 7))):
        ox, oy = rng.uniform(-size / 4, size / 4, 2)
        r = rng.uniform(size / 7, size / 4)
        cv2.ellipse(
            blob,
            (round(cx + ox), round(cy + oy)),
            (round(r), round(r * rng.uniform(0.6, 1.0))),
            float(rng.uniform(0, 180)),
            0,
            360,
            255,
            -1,
        )
    soft = cv2.GaussianBlur(blob, (7, 7), 0)
    local[soft > 40] = 255
    x, y, w, h = cv2.boundingRect(local)
    color = _color(rng, (30, 55, 85), 15) if kind == "plate" else _color(rng, (60, 170, 200), 15)
    alpha = (soft[y : y + h, x : x + w].astype(np.float32) / 255 * rng.uniform(0.65, 0.85))[:, :, None]
    roi = sprite[y : y + h, x : x + w]
    roi[:] = np.clip(roi * (1 - alpha) + np.array(color, np.float32) * alpha, 0, 255).astype(np.uint8)


def _missing(rng: np.random.Generator, sprite: Image, local: Mask, cx: int, cy: int, size: int, kind: str) -> None:
    _footprint(rng, sprite, local, cx, cy, size, with_body=False)


_DRAW_DEFECT: dict[int, Callable[[np.random.Generator, Image, Mask, int, int, int, str], None]] = {
    SCRATCH: _scratch,
    DENT: _dent,
    STAIN: _stain,
    MISSING_COMPONENT: _missing,
}
