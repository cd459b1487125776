"""Loading the YOLO model: device choice, streams and threads, fingerprint, warm-up, batched inference.

The model is loaded once per stream (threads.py): each detector worker thread owns one copy, with its own
Ultralytics predictor, and runs its inferences side by side with the others'.

Importing Ultralytics sets OMP_NUM_THREADS to cores-1 (one thread on a 2-core box), and its predictor sets
torch's threads to cores-1 again when it is set up at the first inference. We set torch's (and OpenCV's)
thread count explicitly after the import and again after each copy's first inference, from the container's CPU
quota rather than the host's core count (cpus.py); ONNX Runtime's and OpenVINO's pools are rebuilt to match.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from daemon.buffers import BufferPool
from daemon.cpus import cpu_limit
from daemon.detect.backends import BackendError, choose_backend, source_stem, weights_sha256
from daemon.detect.prepare import Letterboxer
from daemon.detect.threads import default_streams, default_threads, limit_runtime_threads
from daemon.detect.tiles import ModelInput, whole_frame
from daemon.frames import BBox, Detection, Frame, Image, ModelInfo, Prepared
from daemon.logs import adopt_foreign_loggers, get_logger
from daemon.settings import ModelSettings

log = get_logger("linewatch.model")


class ModelLoadError(Exception):
    """The model or the device cannot be used (exit code 3)."""


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


def _accepted_arguments() -> frozenset[str]:
    from ultralytics.utils import DEFAULT_CFG_DICT

    return frozenset(DEFAULT_CFG_DICT)


def precision_options(half: bool, device: str, accepted: frozenset[str]) -> dict[str, Any]:
    """The predict() arguments for FP16. Ultralytics 8.4 renamed `half` to `quantize=16` and logs a deprecation
    warning on every call that still passes `half`; older releases (a Jetson's pinned wheel) know only `half`.
    FP32 passes nothing: even `half=False` is warned about."""
    if not half or not device.startswith("cuda"):
        return {}
    return {"quantize": 16} if "quantize" in accepted else {"half": True}


def _skip_cpu_warmup(predictor: Any) -> None:
    """Ultralytics' own warm-up runs no inference on a CPU: it only imports torchvision, so that its NMS uses
    torchvision's kernel rather than Ultralytics' own equivalent (the same boxes). That import pulls in
    torch._dynamo, sympy and triton: 160 MB of resident memory on this project's machine
    (bench/results/overhead.md). Detector.warm_up runs real inferences instead."""
    predictor.done_warmup = True


def _trained_imgsz(value: Any) -> int:
    return int(value if isinstance(value, int) else max(value))


class _Replica:
    """One copy of the model, used by one detector thread only (`stream`)."""

    def __init__(self, model: Any) -> None:
        self.model = model  # Ultralytics' YOLO
        self.set_up = False  # Ultralytics builds its predictor at the first inference
        self.batches = BufferPool(slots=4)  # batched inputs, stacked into reused arrays (buffers.py)
        self.rows = 0  # the largest batch stacked so far: a smaller one fills the first rows of its array
        self.tiles = BufferPool(slots=4)  # a pass's tiles, letterboxed into reused arrays


class Detector:
    """A loaded, warmed-up model, one copy per stream. The calls that take `stream` are made, for each stream, from
    one thread only (the detector's worker of that number); `prepare()` from any thread."""

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
        self.device = resolve_device(settings.device)
        self.streams = settings.streams or default_streams(self.device, limit.count, settings.threads)
        self.threads = settings.threads or default_threads(limit.count, self.streams)  # torch's: set once loaded
        cv2.setNumThreads(self.threads)
        log.info("cpu_threads", streams=self.streams, threads=self.threads, cpus=limit.count,
                 source="LINEWATCH_MODEL__THREADS" if settings.threads else limit.source)
        if settings.gpu_memory_fraction is not None and self.device.startswith("cuda"):
            torch.cuda.set_per_process_memory_fraction(settings.gpu_memory_fraction, torch.device(self.device))
            log.info("gpu_memory_fraction", fraction=settings.gpu_memory_fraction, device=self.device)
        self._precision = precision_options(settings.half, self.device, _accepted_arguments())
        if settings.half and not self._precision:
            log.info("half_ignored", device=self.device, reason="FP16 runs on CUDA only; this device runs FP32")
        self._conf = settings.confidence
        self._letterbox: Letterboxer | None = None  # built after the first inference (prepare() returns None until)
        self._nms: Any = None
        self._scale_boxes: Any = None
        self._nms_options: dict[str, Any] = {}
        self._iou = settings.iou
        try:
            choice = choose_backend(settings.path, settings.backend, self.device, settings.imgsz)
        except BackendError as exc:
            raise ModelLoadError(str(exc)) from exc
        self.backend_name, self.weights = choice.backend, choice.path
        log.info("model_backend", backend=choice.backend, path=str(choice.path), reason=choice.reason)
        replicas = []
        for _ in range(self.streams):
            try:  # an export is only opened when its names are read: a corrupt file or a foreign engine fails there
                model = YOLO(str(choice.path), task="detect")
                names = model.names
            except Exception as exc:
                raise ModelLoadError(f"cannot load model {choice.path}: {exc}") from exc
            if self.device == "cpu":
                model.add_callback("on_predict_start", _skip_cpu_warmup)
            replicas.append(_Replica(model))
        self._replicas = replicas
        self.imgsz = settings.imgsz or choice.imgsz or _trained_imgsz(replicas[0].model.overrides.get("imgsz", 640))
        self.info = ModelInfo(
            name=source_stem(choice.path),
            sha256=weights_sha256(choice.path),
            imgsz=self.imgsz,
            device=self.device,
            classes=tuple(str(names[i]) for i in sorted(names)),
        )
        torch.set_num_threads(self.threads)  # after loading: an export opens through select_device(), which resets it

    @property
    def loaded(self) -> Any:
        """Ultralytics' loaded model (AutoBackend) of stream 0 once an inference has run; the benches time its
        forward."""
        return self.backend(0)

    def backend(self, stream: int) -> Any:
        """Ultralytics' loaded model (AutoBackend) of one stream, once that stream has run an inference."""
        return self._replicas[stream].model.predictor.model

    def warm_up(self, width: int, height: int, runs: int, batch: int = 1) -> float:
        """Run blank frames through each copy of the model at the largest batch it will see (CUDA kernels, the
        allocator's largest blocks, fusing). Returns the last time in ms."""
        blank = np.zeros((height, width, 3), dtype=np.uint8)
        elapsed = 0.0
        for stream in range(self.streams):
            for _ in range(runs):  # the first sets Ultralytics' predictor up; the others take the prepared path
                prepared = self.prepare(blank)
                try:
                    if prepared is None or not self._replicas[stream].set_up:
                        _, elapsed = self.infer_batch([blank] * batch, stream)
                    else:
                        _, elapsed = self._infer_prepared([(prepared.tensor, blank.shape[:2])] * batch, stream)
                except Exception as exc:  # the runtime refused the model (an engine of another GPU, a bad export)
                    raise ModelLoadError(f"cannot run model {self.weights}: {exc}") from exc
        return elapsed

    def infer(self, image: Image, stream: int = 0) -> tuple[tuple[Detection, ...], float]:
        """Detections at or above the confidence threshold, and the inference time in ms."""
        found, elapsed_ms = self.infer_batch([image], stream)
        return found[0], elapsed_ms

    def prepare(self, image: Image, pool: BufferPool | None = None) -> Prepared | None:
        """The frame letterboxed to the model's input (Ultralytics' letterbox, prepare.py), RGB, channels first;
        for a CPU model in FP32 also scaled to 0..1 here rather than on the detector's thread. Runs on each
        camera's capture thread, into that thread's `pool`; None before the first inference has set the model up.
        A tiled camera's tiles are letterboxed by the detector instead, a batch at a time (infer_inputs)."""
        letterbox = self._letterbox
        if letterbox is None:
            return None
        return Prepared(letterbox(image, pool))

    def infer_frames(self, frames: Sequence[Frame], stream: int = 0) -> tuple[list[tuple[Detection, ...]], float]:
        """Whole frames, each as its one input (the bare loop of bench/box_limit.py, tests)."""
        return self.infer_inputs([whole_frame(frame)[0] for frame in frames], stream)

    def infer_inputs(self, inputs: Sequence[ModelInput], stream: int = 0) -> tuple[
            list[tuple[Detection, ...]], float]:
        """The detector stage's call: each input's detections in its own pixels, and the time of it all in ms.
        Inputs the capture threads prepared, and tiles (letterboxed here into one reused array per batch), go
        straight to the model, one batch per input shape (cameras of different sizes on a rectangular model, tiles
        beside whole frames); the rest, and a stream's first inference (it sets that copy up), take Ultralytics'
        whole predict path."""
        started = time.perf_counter()
        found: list[tuple[Detection, ...]] = [()] * len(inputs)
        groups: dict[tuple[str, tuple[int, ...]] | None, list[int]] = {}
        replica, letterbox = self._replicas[stream], self._letterbox
        for index, item in enumerate(inputs):
            key = None  # Ultralytics' own path
            if replica.set_up and item.tensor is not None:
                key = ("tensor", item.tensor.shape)
            elif replica.set_up and item.tile and letterbox is not None:
                key = ("tile", item.image.shape)
            groups.setdefault(key, []).append(index)
        for key, indices in groups.items():
            images = [inputs[i].image for i in indices]
            if key is None:
                results, _ = self.infer_batch(images, stream)
            else:
                tensors = (letterbox.many(images, replica.tiles) if key[0] == "tile" and letterbox is not None
                           else [inputs[i].tensor for i in indices])
                results, _ = self._infer_prepared([(tensor, image.shape[:2])
                                                   for tensor, image in zip(tensors, images, strict=True)], stream,
                                                  stacked=tensors if isinstance(tensors, np.ndarray) else None)
            for index, result in zip(indices, results, strict=True):
                found[index] = result
        return found, (time.perf_counter() - started) * 1000.0

    def _infer_prepared(self, items: Sequence[tuple[Image, tuple[int, ...]]], stream: int = 0,
                        stacked: Image | None = None) -> tuple[list[tuple[Detection, ...]], float]:
        """Model, NMS and box scaling only: the same steps as Ultralytics' predictor after its letterbox (its
        tensor conversion, its non_max_suppression, its scale_boxes), without building Results objects.
        `stacked`: the items' inputs already as one batch (a pass's tiles, Letterboxer.many), used as it is."""
        import torch

        started = time.perf_counter()
        replica = self._replicas[stream]
        model = replica.model.predictor.model
        if stacked is None and len(items) == 1:
            stacked = items[0][0][None]
        elif stacked is None:
            first = items[0][0]
            replica.rows = max(replica.rows, len(items))  # one array for the batches of every size, not one each
            shape = (replica.rows, *first.shape)
            stacked = np.stack([tensor for tensor, _ in items], out=replica.batches.take(
                (shape, first.dtype), lambda: np.empty(shape, first.dtype))[:len(items)])
        batch = torch.from_numpy(stacked)
        if batch.device != model.device:  # a CPU model takes the array as it is (.to() would still cost a GIL round)
            batch = batch.to(model.device)
        if batch.dtype == torch.uint8:  # for a GPU the uint8 frame crosses the bus, a quarter of the bytes
            batch = (batch.half() if model.fp16 else batch.float()).div_(255)
        with torch.inference_mode():
            raw = model(batch)
            # No time limit: Ultralytics' NMS gives up after 2 s + 50 ms a frame and leaves the batch's later frames
            # empty (a paused VM or a starved CPU quota would lose their defects, a warning the only trace)
            kept = self._nms(raw, self._conf, self._iou, max_det=300, max_time_img=math.inf, **self._nms_options)
            found = []
            for (_, shape), boxes in zip(items, kept, strict=True):
                xyxy = self._scale_boxes(batch.shape[2:], boxes[:, :4], shape)
                found.append(self._tuples(xyxy.tolist(), boxes[:, 4].tolist(), boxes[:, 5].int().tolist()))
        return found, (time.perf_counter() - started) * 1000.0

    def infer_batch(self, images: Sequence[Image], stream: int = 0) -> tuple[list[tuple[Detection, ...]], float]:
        """One batched inference: each image's detections, in order, and the time of the whole batch in ms.

        Images may differ in size: Ultralytics letterboxes each to the inference size (square when the sizes
        differ) and scales each image's boxes back to its own pixels."""
        replica = self._replicas[stream]
        started = time.perf_counter()
        results = replica.model.predict(list(images), imgsz=self.imgsz, conf=self._conf, iou=self._iou,
                                        device=self.device, verbose=False, **self._precision)
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        if not replica.set_up:
            self._set_threads(replica)
            if self._letterbox is None:
                self._letterbox = self._make_letterbox(replica.model)
        return [self._detections(result) for result in results], elapsed_ms

    def _make_letterbox(self, yolo: Any) -> Letterboxer:
        """Ultralytics' LetterBox as its predictor builds it for a batch of same-size frames: rectangular (long
        side at imgsz, short side padded to the stride) for a .pt or a dynamic export, the export's fixed
        square otherwise. Also picks Ultralytics' NMS and box scaling for the prepared path."""
        from ultralytics.data.augment import LetterBox
        from ultralytics.utils import ops

        try:
            from ultralytics.utils.nms import non_max_suppression
        except ImportError:  # Ultralytics before 8.3.2xx kept it in ops
            non_max_suppression = ops.non_max_suppression  # type: ignore[attr-defined]
        model = yolo.predictor.model
        self._nms, self._scale_boxes = non_max_suppression, ops.scale_boxes
        if getattr(model, "end2end", False):
            self._nms_options = {"end2end": True}
        rect = model.format == "pt" or bool(getattr(model, "dynamic", False))
        size = yolo.predictor.imgsz
        return Letterboxer(LetterBox(tuple(size), auto=rect, stride=int(model.stride)),
                           as_float=str(model.device) == "cpu" and not model.fp16)

    def _set_threads(self, replica: _Replica) -> None:
        """Ultralytics' select_device() sets torch's threads to cores - 1 on the CPU when a predictor is set up, at
        a copy's first inference (one thread on a 2-core box). Set ours again, once per copy, right after it, and
        rebuild an ONNX Runtime or OpenVINO runtime (sized to the host's cores, pinned) on the same count."""
        import torch

        replica.set_up = True
        if torch.get_num_threads() != self.threads:
            log.info("cpu_threads_restored", threads=self.threads, were=torch.get_num_threads())
            torch.set_num_threads(self.threads)
        try:
            runtime = limit_runtime_threads(replica.model.predictor.model, self.weights, self.threads)
        except Exception as exc:  # the runtime refused its own options: the copy Ultralytics built still runs
            log.warning("runtime_threads_not_set", threads=self.threads, error=str(exc))
            return
        if runtime is not None:
            log.debug("runtime_threads", runtime=runtime, threads=self.threads, pinned=False)

    def _detections(self, result: Any) -> tuple[Detection, ...]:
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return ()
        return self._tuples(boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.int().tolist())

    def _tuples(self, xyxy: list[list[float]], confidences: list[float], classes: list[int]) -> tuple[
            Detection, ...]:
        return tuple(
            Detection(
                label=self.info.classes[cls] if cls < len(self.info.classes) else str(cls),
                class_id=cls,
                confidence=round(float(conf), 4),
                bbox=BBox(*(round(float(v), 1) for v in box)),
            )
            for box, conf, cls in zip(xyxy, confidences, classes, strict=True)
            if conf >= self._conf
        )
