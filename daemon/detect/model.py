"""Loading the YOLO model: device choice, thread count, fingerprint, warm-up, one inference.

Importing Ultralytics sets OMP_NUM_THREADS to cores-1 (one thread on a 2-core box), which halves CPU
throughput; we set torch's (and OpenCV's) thread count explicitly after the import, from the container's CPU
quota rather than the host's core count (cpus.py).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from daemon.cpus import cpu_limit
from daemon.frames import BBox, Detection, Image, ModelInfo
from daemon.logs import adopt_foreign_loggers, get_logger
from daemon.settings import ModelSettings

log = get_logger("linewatch.model")


class ModelLoadError(Exception):
    """The model or the device cannot be used (exit code 3)."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as weights:
        for block in iter(lambda: weights.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelLoadError(
                f"LINEWATCH_MODEL__DEVICE={requested} but CUDA is not available "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); check the driver and the "
                "container's GPU runtime, or use device=auto/cpu"
            )
        index = int(requested.split(":")[1]) if ":" in requested else 0
        if index >= torch.cuda.device_count():
            raise ModelLoadError(f"{requested}: only {torch.cuda.device_count()} CUDA device(s) present")
        return f"cuda:{index}"
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError("LINEWATCH_MODEL__DEVICE=mps but MPS is not available")
    return requested


class Detector:
    """A loaded, warmed-up model. `infer()` is called from the detector thread only."""

    def __init__(self, settings: ModelSettings) -> None:
        os.environ.setdefault("YOLO_OFFLINE", "1")  # never let Ultralytics reach for the network
        try:
            import torch
            from ultralytics import YOLO  # type: ignore[attr-defined]

            adopt_foreign_loggers()  # Ultralytics installed its own handler on import; route it through ours
        except ImportError as exc:  # a broken wheel (e.g. torch/CUDA mismatch) shows here
            raise ModelLoadError(f"cannot import the inference stack: {exc}") from exc
        import cv2

        limit = cpu_limit()
        self.threads = settings.threads or limit.count
        torch.set_num_threads(self.threads)
        cv2.setNumThreads(self.threads)
        log.info("cpu_threads", threads=self.threads, cpus=limit.count, source="LINEWATCH_MODEL__THREADS"
                 if settings.threads else limit.source)
        self.device = resolve_device(settings.device)
        if settings.gpu_memory_fraction is not None and self.device.startswith("cuda"):
            torch.cuda.set_per_process_memory_fraction(settings.gpu_memory_fraction, torch.device(self.device))
            log.info("gpu_memory_fraction", fraction=settings.gpu_memory_fraction, device=self.device)
        self._half = settings.half and self.device.startswith("cuda")
        self._conf = settings.confidence
        self._iou = settings.iou
        try:
            self._model: Any = YOLO(str(settings.path), task="detect")
        except Exception as exc:
            raise ModelLoadError(f"cannot load model {settings.path}: {exc}") from exc
        trained = self._model.overrides.get("imgsz", 640)
        self.imgsz = settings.imgsz or int(trained if isinstance(trained, int) else max(trained))
        names = self._model.names
        self.info = ModelInfo(
            name=settings.path.stem,
            sha256=file_sha256(settings.path),
            imgsz=self.imgsz,
            device=self.device,
            classes=tuple(str(names[i]) for i in sorted(names)),
        )

    def warm_up(self, width: int, height: int, runs: int) -> float:
        """Run blank frames through the model (CUDA kernels, allocator, fusing). Returns the last time in ms."""
        blank = np.zeros((height, width, 3), dtype=np.uint8)
        elapsed = 0.0
        for _ in range(runs):
            _, elapsed = self.infer(blank)
        return elapsed

    def infer(self, image: Image) -> tuple[tuple[Detection, ...], float]:
        """Detections at or above the confidence threshold, and the inference time in ms."""
        started = time.perf_counter()
        options = {"half": True} if self._half else {}  # passing half=False makes Ultralytics warn per call
        results = self._model.predict(
            image, imgsz=self.imgsz, conf=self._conf, iou=self._iou, device=self.device, verbose=False, **options
        )
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        boxes = results[0].boxes
        if boxes is None or len(boxes) == 0:
            return (), elapsed_ms
        xyxy = boxes.xyxy.cpu().numpy().tolist()
        confidences = boxes.conf.cpu().numpy().tolist()
        classes = boxes.cls.cpu().numpy().astype(int).tolist()
        detections = tuple(
            Detection(
                label=self.info.classes[cls] if cls < len(self.info.classes) else str(cls),
                class_id=cls,
                confidence=round(float(conf), 4),
                bbox=BBox(*(round(float(v), 1) for v in box)),
            )
            for box, conf, cls in zip(xyxy, confidences, classes, strict=True)
            if conf >= self._conf
        )
        return detections, elapsed_ms
