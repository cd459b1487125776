"""Settings of the event stage: the defect lifecycle, the rules above the model's floor, regions of interest,
snapshots. Models only; the package root (`__init__.py`) reads the environment.

Rules come from three layers, each overriding the one before: a JSON file (`LINEWATCH_RULES__FILE`), inline
JSON (`LINEWATCH_RULES__INLINE`), and single variables (`LINEWATCH_RULES__CLASSES__SCRATCH__MIN_CONFIDENCE`).
The same `RulesSettings` shape is what a camera's own rules will take once there are several cameras.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from daemon.settings.base import Section, read_small_file, unknown_keys

Point = tuple[float, float]
Polygon = list[Point]
MAX_AREA_PX = 1e9  # more than a 16384 x 16384 frame
MAX_POLYGONS, MAX_POINTS, MAX_PIXEL = 64, 4096, 1e6


class EventsSettings(Section):
    mode: Literal["defects", "frames"] = Field(
        "defects", description="defects: one event per physical defect (new, end); frames: one per frame with "
        "detections (schema linewatch.frame_defects/1)")
    confirm_hits: int = Field(3, ge=1, le=100, description="A track becomes a defect when seen in this many (K) ...")
    confirm_window: int = Field(5, ge=1, le=100, description="... of the last M frames (M)")
    end_events: bool = Field(True, description="Publish an `end` event when a defect's track is gone")
    track_lost_frames: int = Field(
        15, ge=1, le=10000, description="Frames a track may go unseen (skipped frames count) before it ends")
    stats_interval_s: float = Field(
        10.0, ge=0, le=3600, description="Publish retained {prefix}/{camera}/stats this often; 0: never")

    @model_validator(mode="after")
    def _k_within_m(self) -> EventsSettings:
        if self.confirm_hits > self.confirm_window:
            raise ValueError(f"confirm_hits ({self.confirm_hits}) is more than confirm_window "
                             f"({self.confirm_window}): a track could never be confirmed")
        return self


class SnapshotSettings(Section):
    mode: Literal["off", "frame", "crop", "both"] = Field(
        "off", description="JPEG of the best view: the full frame with boxes, a crop of the defect, or both")
    max_width: int = Field(1280, ge=64, le=4096, description="Full-frame snapshots are scaled down to this width")
    quality: int = Field(85, ge=10, le=100, description="JPEG quality")
    crop_margin: float = Field(0.25, ge=0, le=4, description="Crops extend the box by this fraction on each side")


class ClassRule(Section):
    min_confidence: float | None = Field(None, gt=0, le=1, description="Threshold for this class")
    min_area_px: float | None = Field(
        None, ge=0, le=MAX_AREA_PX, description="Smallest box area, in pixels of the frame")
    max_area_px: float | None = Field(
        None, gt=0, le=MAX_AREA_PX, description="Largest box area, in pixels of the frame")
    min_track_frames: int | None = Field(None, ge=1, le=10000, description="Frames seen before it may be a defect")
    ignore: bool = Field(False, description="Drop this class altogether")


class RoiSettings(Section):
    units: Literal["normalized", "pixels"] = Field(
        "normalized", description="Polygon coordinates: 0..1 of the frame, or pixels")
    include: list[Polygon] = Field(
        default_factory=list, max_length=MAX_POLYGONS,
        description="JSON list of polygons [[x, y], ...]; a detection must lie in one")
    exclude: list[Polygon] = Field(
        default_factory=list, max_length=MAX_POLYGONS,
        description="JSON list of polygons; a detection in any of them is dropped")

    @field_validator("include", "exclude")
    @classmethod
    def _polygons(cls, polygons: list[Polygon]) -> list[Polygon]:
        for number, polygon in enumerate(polygons, 1):
            if not 3 <= len(polygon) <= MAX_POINTS:
                raise ValueError(f"polygon {number} has {len(polygon)} points; a polygon has 3 to {MAX_POINTS}")
            if not all(math.isfinite(v) and abs(v) <= MAX_PIXEL for point in polygon for v in point):
                raise ValueError(f"polygon {number} has a coordinate that is not a finite number up to {MAX_PIXEL:g}")
        return polygons

    @model_validator(mode="after")
    def _normalized_within_frame(self) -> RoiSettings:
        if self.units == "normalized":
            for polygon in (*self.include, *self.exclude):
                if any(not (0.0 <= v <= 1.0) for point in polygon for v in point):
                    raise ValueError(f"normalized polygon {polygon} has a coordinate outside 0..1; "
                                     "use units=pixels for pixel coordinates")
        return self


_MERGED = ("classes", "roi")  # dicts merged key by key across the layers; other fields are replaced


def merge_layers(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_layers(merged[key], value)
        else:
            merged[key] = value
    return merged


class RulesSettings(Section):
    file: Path | None = Field(None, description="JSON file with rules (the same keys as below); lowest layer")
    inline: str | None = Field(None, max_length=256 * 1024, description="Rules as inline JSON; overrides the file")
    # 0.7: the operating point chosen on a validation seed (models/MODEL_CARD.md).
    min_confidence: float = Field(
        0.7, gt=0, le=1, description="A detection counts as a defect sighting from this confidence up, every class")
    ignore: str = Field("", description="Comma-separated classes to drop altogether")
    min_area_px: float | None = Field(
        None, ge=0, le=MAX_AREA_PX, description="Smallest box area in pixels, every class")
    max_area_px: float | None = Field(
        None, gt=0, le=MAX_AREA_PX, description="Largest box area in pixels, every class")
    min_track_frames: int | None = Field(None, ge=1, le=10000, description="Frames seen before it may be a defect")
    classes: dict[str, ClassRule] = Field(
        default_factory=dict, description="Per class: LINEWATCH_RULES__CLASSES__<CLASS>__<FIELD>")
    roi: RoiSettings = Field(default_factory=dict, validate_default=True, description="Regions of interest")

    @model_validator(mode="before")
    @classmethod
    def _layers(cls, data: Any) -> Any:
        """file < inline JSON < single variables."""
        if not isinstance(data, dict):
            return data
        layered: dict[str, Any] = {}
        if data.get("file"):
            if not isinstance(data["file"], str | Path):
                raise ValueError("rules file: give the path of a JSON file")
            origin = f"rules file {str(data['file'])!r}"
            try:
                text = read_small_file(Path(data["file"])).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{origin} is not UTF-8 text (byte {exc.object[exc.start]:#04x}); save it as "
                                 "UTF-8") from None
            except ValueError as exc:
                raise ValueError(f"rules file: {exc}") from None
            layered = _json_object(text, origin)
            layered.pop("file", None)
        if data.get("inline"):
            inline = _json_object(str(data["inline"]), "inline JSON")
            inline.pop("file", None)
            layered = merge_layers(layered, inline)
        return merge_layers(layered, {k: v for k, v in data.items() if k not in ("inline",) or v})

    @field_validator("ignore", mode="before")
    @classmethod
    def _ignore_list(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise ValueError(f"{value!r}: ignore lists class names (strings)")
            return ",".join(value)
        return value

    @property
    def ignored(self) -> frozenset[str]:
        return frozenset(name.strip() for name in self.ignore.split(",") if name.strip())

    def unknown_classes(self, known: tuple[str, ...], prefix: str = "LINEWATCH_RULES") -> list[str]:
        """Variables naming a class the model does not have (checked once the model is loaded)."""
        problems = [f"{prefix}__CLASSES__{name.upper()}: unknown class {name!r}; the model's classes: "
                    f"{', '.join(known)}" for name in self.classes if name not in known]
        problems += [f"{prefix}__IGNORE: unknown class {name!r}; the model's classes: {', '.join(known)}"
                     for name in sorted(self.ignored) if name not in known]
        return problems


def _json_object(text: str, origin: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{origin} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{origin} must be a JSON object with keys such as classes, ignore, roi")
    unknown = list(unknown_keys(RulesSettings, value))
    if unknown:
        raise ValueError(f"{origin} has an unknown key {unknown[0]}"
                         + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
    return value
