"""Rules above the model's floor: per-class thresholds, ignored classes, box area bounds, regions of interest.

The model reports everything at or above LINEWATCH_MODEL__CONFIDENCE (the floor); these rules decide which of
those detections may become defects. Each refusal has a reason, counted per camera.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from daemon.frames import Detection
from daemon.settings.events import Polygon, RulesSettings

# Why a detection was dropped: the `reason` label of linewatch_detections_filtered_total.
IGNORED, CONFIDENCE, AREA, ROI = "ignored_class", "confidence", "area", "roi"
_Poly = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ClassLimits:
    min_confidence: float
    min_area_px: float
    max_area_px: float
    min_track_frames: int
    ignore: bool


class Rules:
    def __init__(self, settings: RulesSettings, classes: tuple[str, ...], floor: float) -> None:
        def limits(name: str) -> ClassLimits:
            rule = settings.classes.get(name)

            def pick(field: str, default: float) -> float:
                value = getattr(rule, field) if rule is not None else None
                return float(value) if value is not None else default

            return ClassLimits(
                min_confidence=max(floor, pick("min_confidence", settings.min_confidence)),
                min_area_px=pick("min_area_px", settings.min_area_px or 0.0),
                max_area_px=pick("max_area_px", settings.max_area_px or float("inf")),
                min_track_frames=int(pick("min_track_frames", settings.min_track_frames or 1)),
                ignore=name in settings.ignored or (rule is not None and rule.ignore),
            )

        self._limits = {class_id: limits(name) for class_id, name in enumerate(classes)}
        self._default = limits("")
        self._roi = settings.roi
        self._pixels: dict[tuple[int, int], tuple[list[_Poly], list[_Poly]]] = {}
        self._shapes: dict[tuple[int, int], tuple[list[Any] | None, ...]] = {}  # shapely polygons, per frame size

    def limits(self, class_id: int) -> ClassLimits:
        return self._limits.get(class_id, self._default)

    def strong(self, detection: Detection) -> bool:
        """At or above its class's threshold: a sighting that counts towards confirming a defect."""
        return detection.confidence >= self.limits(detection.class_id).min_confidence

    def refuse(self, detection: Detection, width: int, height: int) -> str | None:
        """None when the detection may be tracked, else the reason it may not. Confidence is not judged here:
        a weak detection still keeps a track alive (`strong` decides what counts)."""
        limit = self.limits(detection.class_id)
        if limit.ignore:
            return IGNORED
        box = detection.bbox
        area = max(0.0, box.x2 - box.x1) * max(0.0, box.y2 - box.y1)
        if not limit.min_area_px <= area <= limit.max_area_px:
            return AREA
        if self._roi.include or self._roi.exclude:
            include, exclude = self._polygons(width, height)
            centre = ((box.x1 + box.x2) / 2.0, (box.y1 + box.y2) / 2.0)
            if (include and not any(_inside(p, centre) for p in include)) or any(_inside(p, centre) for p in exclude):
                return ROI
        return None

    def may_hold(self, width: int, height: int, box: tuple[int, int, int, int]) -> bool:
        """Whether a detection found in this part of the frame (a tile: its boxes' centres lie in it) could pass
        the regions of interest: False for a tile that no included region touches, or that an excluded one covers
        whole (shapely's exact tests on the closed shapes, as pointPolygonTest counts a point on an edge inside).
        A polygon shapely finds invalid (one that crosses itself) never skips a tile."""
        if not (self._roi.include or self._roi.exclude):
            return True
        key = (width, height)
        if key not in self._shapes:
            self._shapes[key] = tuple(_shapes(polygons) for polygons in self._polygons(width, height))
        from shapely import box as rectangle

        include, exclude = self._shapes[key]
        tile = rectangle(*box)
        if include is not None and not any(p.intersects(tile) for p in include):
            return False
        return exclude is None or not any(p.covers(tile) for p in exclude)

    def _polygons(self, width: int, height: int) -> tuple[list[_Poly], list[_Poly]]:
        """The ROI in this frame size's pixels (a camera may change resolution; cached per size)."""
        key = (width, height)
        if key not in self._pixels:
            scale = (width, height) if self._roi.units == "normalized" else (1.0, 1.0)

            def pixels(polygons: list[Polygon]) -> list[_Poly]:
                return [np.array([(x * scale[0], y * scale[1]) for x, y in p], dtype=np.float32) for p in polygons]

            self._pixels[key] = (pixels(self._roi.include), pixels(self._roi.exclude))
        return self._pixels[key]


def _inside(polygon: npt.NDArray[np.float32], point: tuple[float, float]) -> bool:
    return float(cv2.pointPolygonTest(polygon, point, False)) >= 0



def _shapes(polygons: list[_Poly]) -> list[Any] | None:
    """The regions as shapely polygons; None when there are none, or one is not a valid shape (never skip then)."""
    from shapely import Polygon as Shape

    shapes = [Shape(p.astype(np.float64)) for p in polygons]
    return shapes if shapes and all(s.is_valid for s in shapes) else None
