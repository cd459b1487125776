"""Tiled inference: small defects on large frames, seen at the frame's own resolution.

A 12 px scratch on a 2592x1944 frame letterboxed to a 320 px model input becomes a pixel and a half, and no
model sees it. A camera with tiles (LINEWATCH_CAMERAS__<ID>__TILES) is cut into overlapping tiles of the
model's input size (or the size set), each inspected as a picture of its own, optionally beside the whole frame
letterboxed (for defects larger than a tile); the boxes are shifted back to the frame and merged across tiles
before the rules, the regions of interest and the tracker see them: one frame, merged boxes.

The slicing and the merging are SAHI's (Akyon et al., "Slicing Aided Hyper Inference", ICIP 2022), the library
Roboflow's and Ultralytics' docs point to: its grid (`get_slice_bboxes`: the last row and column move in so that
every tile is whole) and its greedy non-maximum merging per class over intersection-over-smaller (a box cut by
a tile border is inside the whole box the next tile saw: merged into the union, at the higher confidence). The
grid is computed once per frame size; tiles wholly outside the camera's regions of interest (or wholly inside
an excluded one) are never inspected. The shared detector takes at most `per_batch` of a frame's tiles per batch
(stage.py), so one 5 MP camera does not starve the others, and letterboxes them itself, a batch at a time, into one
reused array that goes to the model as it is: a frame's 80 tiles letterboxed at once would hold 100 MB of float
inputs per frame in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from daemon.frames import BBox, Detection, Frame, Image
from daemon.settings.cameras import TileSettings

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in the frame's pixels (x2, y2 exclusive)
# Whether a tile may hold a detection that the camera's rules keep (its regions of interest), per frame size.
TileFilter = Callable[[int, int, Box], bool]


class Inputs(Protocol):
    """What the detector asks of a lane's frames: their model inputs, how many per batch, and the merge."""

    per_batch: int

    def inputs(self, frame: Frame) -> list[ModelInput]: ...

    def merge_for(self, frame: Frame, inputs: Sequence[ModelInput],
                  found: Sequence[tuple[Detection, ...]]) -> tuple[Detection, ...]: ...


@dataclass(frozen=True, slots=True)
class ModelInput:
    """One picture for the model: a whole frame, or a tile (a view of it) and where it lies in the frame."""

    image: Image
    tensor: Any  # a whole frame's letterboxed input, made on its capture thread; None: made by the detector
    x: int = 0
    y: int = 0
    tile: bool = False  # a tile: letterboxed by the detector a pass at a time (else Ultralytics' own path)


_sahi_lock = threading.Lock()
_sahi: dict[str, Any] = {}


def _sahi_parts() -> dict[str, Any]:
    """SAHI's slicing and merging, imported once when a tiled camera first needs them (its import pulls in shapely
    and PIL: a daemon without tiles never pays for it). Its merging runs on numpy: the torchvision backend that
    SAHI picks where a GPU is present would copy a few dozen boxes to the device and back."""
    with _sahi_lock:
        if not _sahi:
            from sahi.postprocess.backends import set_postprocess_backend
            from sahi.postprocess.combine import GreedyNMMPostprocess
            from sahi.prediction import ObjectPrediction
            from sahi.slicing import get_slice_bboxes

            set_postprocess_backend("numpy")
            _sahi.update(grid=get_slice_bboxes, merge=GreedyNMMPostprocess, prediction=ObjectPrediction)
        return _sahi


def slice_grid(width: int, height: int, size: int, overlap: float) -> list[Box]:
    """SAHI's tiles of a frame: `size` square (the frame's side where it is smaller), `overlap` of a side shared
    with each neighbour, the last row and column moved in so that every tile is whole; left to right, top down."""
    boxes = _sahi_parts()["grid"](height, width, size, size, False, overlap, overlap)
    return [(int(x1), int(y1), int(x2), int(y2)) for x1, y1, x2, y2 in boxes]


class Tiler:
    """One camera's tiling: its grid per frame size, its model inputs per frame, and the merge of their boxes.
    `grid` is called from the capture thread and the detector's; the cache is filled under a lock."""

    def __init__(self, settings: TileSettings, imgsz: int, keep: TileFilter | None = None) -> None:
        self.settings = settings
        self.size = settings.size or imgsz
        self.full_frame = settings.full_frame
        self.per_batch = settings.per_batch
        self._keep = keep
        self._grids: dict[tuple[int, int], tuple[Box, ...]] = {}
        self._lock = threading.Lock()
        parts = _sahi_parts()
        self._merge = parts["merge"](match_threshold=settings.merge_ios, match_metric="IOS", class_agnostic=False)
        self._prediction = parts["prediction"]

    def grid(self, width: int, height: int) -> tuple[Box, ...]:
        """The tiles of a frame of this size that are inspected, left to right, top to bottom."""
        key = (width, height)
        grid = self._grids.get(key)
        if grid is None:
            with self._lock:
                keep = self._keep
                grid = tuple(box for box in slice_grid(width, height, self.size, self.settings.overlap)
                             if keep is None or keep(width, height, box))
                self._grids[key] = grid
        return grid

    def inputs(self, frame: Frame) -> list[ModelInput]:
        """The frame's model inputs: its tiles (letterboxed by the detector), then the whole frame (letterboxed on
        its capture thread, if it was) when the full-frame pass is on."""
        image = frame.image
        found = [ModelInput(image[y1:y2, x1:x2], None, x1, y1, True)
                 for x1, y1, x2, y2 in self.grid(frame.width, frame.height)]
        if self.full_frame:
            found.extend(whole_frame(frame))
        return found

    def merge_for(self, frame: Frame, inputs: Sequence[ModelInput],
                  found: Sequence[tuple[Detection, ...]]) -> tuple[Detection, ...]:
        return self.merge(inputs, found)

    def merge(self, inputs: Sequence[ModelInput], found: Sequence[tuple[Detection, ...]]) -> tuple[Detection, ...]:
        """The boxes of every input in the frame's pixels, merged across tiles (SAHI's greedy NMM per class, by
        intersection over the smaller box), strongest first."""
        predictions = []
        labels: dict[int, str] = {}
        for item, detections in zip(inputs, found, strict=True):
            for d in detections:
                labels[d.class_id] = d.label
                box = d.bbox
                predictions.append(self._prediction(
                    bbox=[box.x1 + item.x, box.y1 + item.y, box.x2 + item.x, box.y2 + item.y],
                    category_id=d.class_id, category_name=d.label, score=d.confidence))
        if not predictions:
            return ()
        merged = self._merge(predictions) if len(predictions) > 1 else predictions
        out = [Detection(labels[int(p.category.id)], int(p.category.id), round(float(p.score.value), 4),
                         BBox(*(round(float(v), 1) for v in p.bbox.to_xyxy())))
               for p in merged]
        out.sort(key=lambda d: -d.confidence)
        return tuple(out)


def whole_frame(frame: Frame) -> list[ModelInput]:
    """An untiled camera's one input: the frame, letterboxed on its capture thread (or not yet)."""
    prepared = frame.prepared
    return [ModelInput(frame.image, prepared.tensor if prepared is not None else None)]


class ByCamera:
    """/detect's inputs: a request's image is tiled as the camera it names is (its Tiler), else inspected whole."""

    def __init__(self, tilers: dict[str, Tiler]) -> None:
        self._tilers = tilers
        self.per_batch = max([1, *(tiler.per_batch for tiler in tilers.values())])

    def tiler(self, camera_id: str) -> Tiler | None:
        return self._tilers.get(camera_id)

    def inputs(self, frame: Frame) -> list[ModelInput]:
        tiler = self._tilers.get(frame.camera_id)
        return tiler.inputs(frame) if tiler is not None else whole_frame(frame)

    def merge_for(self, frame: Frame, inputs: Sequence[ModelInput],
                  found: Sequence[tuple[Detection, ...]]) -> tuple[Detection, ...]:
        tiler = self._tilers.get(frame.camera_id)
        if tiler is None:
            return found[0] if found else ()  # one picture: nothing to merge across
        return tiler.merge(inputs, found)
