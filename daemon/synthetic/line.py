"""The synthetic production line's renderer: every frame a pure function of the parameters and its index.

The parameters, the URL form and the ground truth types are in params.py (which needs no OpenCV);
the parts and their defects are drawn in parts.py.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from daemon.synthetic.params import (
    CLASS_NAMES,
    MIN_VISIBLE_FRACTION,
    PART_KINDS,
    Image,
    LineFrame,
    LineParams,
    PartTruth,
    TruthBox,
)
from daemon.synthetic.parts import Geometry, Part, draw_belt, make_part, rng_for

# Separate random streams, so that e.g. changing the noise model never changes which parts are defective.
_PART_TAG, _FRAME_TAG, _SCENE_TAG = 0x9A27, 0xF7A3, 0x5CE2
_NOISE_PAD = 64  # the noise bank is this much larger than a frame; each frame reads it at a random offset
_SPRITE_CACHE = 48  # parts on screen at once is ~6; the cache only has to span one pass of the belt


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
        self._cache: OrderedDict[int, Part] = OrderedDict()
        self._lock = threading.Lock()  # the daemon's capture thread and a scorer may share one line
        rng = rng_for(params.seed, _SCENE_TAG)
        self._belt = draw_belt(rng, w, h, s)
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
        rng = rng_for(p.seed, _FRAME_TAG, index)
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

    def photo_eye(self, index: int) -> int | None:
        """The part whose centre crosses the upper lane's centre line (x = width / 2) in frame `index`: its centre was
        left of it in the frame before and is on or right of it now. None for most frames."""
        if index < 1:
            return None
        before, now, centre = self._offset(index - 1), self._offset(index), self.params.width / 2
        for geo in self._visible(now):
            if geo.y + geo.h / 2 < self.params.height / 2:  # the upper lane
                x = self._screen_x(geo, now) + geo.w / 2
                if x >= centre > x - (now - before):
                    return geo.part_id
        return None

    def _offset(self, index: int) -> int:
        return math.floor(index * self.params.speed + 0.5)

    def _screen_x(self, geo: Geometry, offset: int) -> int:
        return offset + self.params.width - geo.belt_x - geo.w

    def _visible(self, offset: int) -> list[Geometry]:
        first_slot = max(0, (offset - self._max_part_w) // self._pitch - 1)
        last_slot = (offset + self.params.width) // self._pitch + 1
        visible = []
        for part_id in range(2 * first_slot, 2 * last_slot + 2):
            geo = self._geometry(rng_for(self.params.seed, _PART_TAG, part_id), part_id)
            x = self._screen_x(geo, offset)
            if x < self.params.width and x + geo.w > 0:
                visible.append(geo)
        return visible

    def _geometry(self, rng: np.random.Generator, part_id: int) -> Geometry:
        s, kinds = self._scale, PART_KINDS[self.params.parts]
        kind = kinds[int(rng.integers(0, len(kinds)))]
        wide, tall = ((140, 220), (110, 170)) if kind == "plate" else ((150, 230), (110, 160))
        w = int(rng.integers(round(wide[0] * s), round(wide[1] * s) + 1))
        h = int(rng.integers(round(tall[0] * s), round(tall[1] * s) + 1))
        lane, slot = part_id % 2, part_id // 2
        belt_x = slot * self._pitch + lane * (self._pitch // 2) + int(rng.integers(0, self._jitter + 1))
        wobble = round(10 * s)
        y = self._lanes[lane] + int(rng.integers(-wobble, wobble + 1)) - h // 2
        defective = bool(rng.random() < self.params.defect_rate)
        return Geometry(part_id, kind, belt_x, y, w, h, defective)

    def _part(self, part_id: int) -> Part:
        with self._lock:
            cached = self._cache.get(part_id)
            if cached is not None:
                self._cache.move_to_end(part_id)
                return cached
        rng = rng_for(self.params.seed, _PART_TAG, part_id)
        geo = self._geometry(rng, part_id)  # same draws as in _visible, then the look continues the stream
        part = make_part(rng, geo, self.params, self._scale)
        with self._lock:
            self._cache[part_id] = part
            while len(self._cache) > _SPRITE_CACHE:
                self._cache.popitem(last=False)
        return part

    def _blit(self, img: Image, part: Part, offset: int) -> None:
        geo, fw = part.geo, self.params.width
        x = self._screen_x(geo, offset)
        x1, x2 = max(0, x), min(fw, x + geo.w)
        sx1, sx2 = x1 - x, x2 - x
        shadow_dx, shadow_dy = round(5 * self._scale), round(7 * self._scale)
        shadow = img[geo.y + shadow_dy : geo.y + shadow_dy + geo.h, max(0, x1 + shadow_dx) : min(fw, x2 + shadow_dx)]
        np.right_shift(shadow, 1, out=shadow)
        roi = img[geo.y : geo.y + geo.h, x1:x2]
        np.copyto(roi, part.sprite[:, sx1:sx2], where=part.mask[:, sx1:sx2])

    def _truth(self, parts: list[Part], offset: int) -> tuple[tuple[PartTruth, ...], tuple[TruthBox, ...]]:
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


__all__ = ["CLASS_NAMES", "LineFrame", "LineParams", "PartTruth", "SyntheticLine", "TruthBox"]
