"""`POST /detect`: one image inspected on demand by the loaded model, as one more source of the shared detector.

The request's image (a JPEG or PNG body, or the first file of a multipart form) becomes a frame on a lane of its
own (`/detect`), which the detector serves only with room left in a batch once every camera had its turn: the
cameras keep priority. The lane is bounded (LINEWATCH_HTTP__DETECT_QUEUE requests waiting or in the model; 429
beyond), the body too (DETECT_MAX_MB; 413), and so is the picture (MAX_PIXELS; 413: a small PNG can claim a huge
picture). `?camera=<id>` applies that camera's rules (thresholds, classes, regions of interest) and, when it has
tiles, its tiling; without it, the default rules and the whole image. The answer is `linewatch.detections/1`
(schemas/detections-v1.schema.json): the detections a per-frame event would list.

This stage's thread (`detect:api`) takes the results and answers each request's future; the HTTP server awaits
it with DETECT_TIMEOUT_S (504 after). At the stop it closes the lane, so the detector ends without waiting for it.
"""

from __future__ import annotations

import collections
import hmac
import io
import itertools
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import cv2
import numpy as np

from daemon import __version__
from daemon.detect.stage import Lane
from daemon.detect.tiles import ByCamera, Tiler
from daemon.events.rules import Rules
from daemon.frames import END_OF_STREAM, Frame, Image, Inference, ModelInfo, Prepared, rfc3339, utc_now
from daemon.handoff import Bell, DropPolicy, Handoff
from daemon.lifecycle import StageThread

SCHEMA = "linewatch.detections/1"
LANE = "/detect"  # the detector's lane and the camera label of its metrics
MAX_PIXELS = 64_000_000  # a 64 MP picture at most (a 5 MP camera's frame is 5)
_POLL_S = 0.25
Answer = tuple[int, dict[str, Any]]
Prepare = Callable[[Image, Any], Prepared | None]


class DetectApi(StageThread):
    def __init__(self, model: ModelInfo, cameras: dict[str, tuple[Rules, Tiler | None]], default_rules: Rules,
                 prepare: Prepare, bell: Bell, stop: threading.Event, *, queue: int, token: str | None) -> None:
        super().__init__("detect:api", stop)
        self._model = model
        self._cameras = cameras
        self._default_rules = default_rules
        self._prepare = prepare
        self._token = token
        self._inputs = ByCamera({cid: tiler for cid, (_, tiler) in cameras.items() if tiler is not None})
        frames: Handoff[Frame] = Handoff(f"frames:{LANE}", queue, DropPolicy.WAIT, stop, bell=bell)
        self._results: Handoff[Inference] = Handoff(f"results:{LANE}", queue, DropPolicy.WAIT, stop)
        self.lane = Lane(LANE, frames, self._results, self._inputs, background=True)
        self._slots = threading.BoundedSemaphore(queue)
        self._waiting: dict[int, tuple[Future[Answer], str | None, float]] = {}
        self._lock = threading.Lock()
        self._seq = itertools.count()

    # -- the HTTP server's side ------------------------------------------------------------------------------
    def authorized(self, header: str | None) -> bool:
        """The request's Authorization header carries the bearer token (or none is asked for)."""
        if self._token is None:
            return True
        given = (header or "").removeprefix("Bearer ").strip().encode()
        return header is not None and header.startswith("Bearer ") and hmac.compare_digest(given,
                                                                                             self._token.encode())

    def submit(self, body: bytes, content_type: str, camera: str | None) -> Answer | Future[Answer]:
        """Decode the request's image and queue it; an answer at once when it cannot be inspected."""
        if camera is not None and camera not in self._cameras:
            return 404, {"error": f"no camera {camera[:64]!r}; cameras: {', '.join(sorted(self._cameras))}"}
        try:
            image = _decode(_image_bytes(body, content_type))
        except ValueError as exc:
            return (413 if "pixels" in str(exc) else 400), {"error": str(exc)}
        if not self._slots.acquire(blocking=False):
            return 429, {"error": f"{self.lane.frames.capacity} requests are being inspected; try again"}
        try:
            tiler = self._inputs.tiler(camera) if camera is not None else None
            # a tiled camera's tiles are letterboxed by the detector, a batch at a time (as for the camera itself)
            prepared = self._prepare(image, None) if tiler is None or tiler.full_frame else None
            seq = next(self._seq)
            image.setflags(write=False)
            frame = Frame(camera or LANE, seq, image, time.monotonic(), utc_now(), prepared)
            answer: Future[Answer] = Future()
            with self._lock:
                self._waiting[seq] = (answer, camera, time.monotonic())
            if not self.lane.frames.offer(frame):  # closed: stopping
                with self._lock:
                    self._waiting.pop(seq, None)
                self._slots.release()
                return 503, {"error": "linewatch is stopping"}
        except BaseException:
            self._slots.release()
            raise
        return answer

    def forget(self, answer: Future[Answer]) -> None:
        """The client's deadline passed: its result, when it comes, is dropped."""
        answer.cancel()

    # -- this stage's thread ---------------------------------------------------------------------------------
    def run(self) -> None:
        while True:
            if self._stop.is_set() and not self.lane.frames.closed:
                self.lane.frames.close()  # the detector ends this lane with the cameras'
            item = self._results.get(_POLL_S)
            if item is END_OF_STREAM:
                break
            if item is not None:
                self._answer(item)
        with self._lock:
            left, self._waiting = list(self._waiting.values()), {}
        for answer, _, _ in left:
            answer.set_result((503, {"error": "linewatch stopped before the image was inspected"}))

    def _answer(self, result: Inference) -> None:
        frame = result.frame
        with self._lock:
            waiting = self._waiting.pop(frame.seq, None)
        self._slots.release()
        if waiting is None:
            return
        answer, camera, since = waiting
        rules = self._cameras[camera][0] if camera is not None else self._default_rules
        filtered: collections.Counter[str] = collections.Counter()
        kept = []
        for d in result.detections:
            reason = rules.refuse(d, frame.width, frame.height) or (None if rules.strong(d) else "confidence")
            if reason is None:
                kept.append(d)
            else:
                filtered[reason] += 1
        tiler = self._inputs.tiler(camera) if camera is not None else None
        payload = {
            "schema": SCHEMA,
            "request_id": str(uuid.uuid4()),
            "camera_id": camera,
            "received_at": rfc3339(frame.captured_utc),
            "image": {"width": frame.width, "height": frame.height},
            "model": {"name": self._model.name, "sha256": self._model.sha256},
            "tiles": len(tiler.grid(frame.width, frame.height)) if tiler is not None else 0,
            "detections": [{"label": d.label, "class_id": d.class_id, "confidence": d.confidence,
                            "bbox": {"x1": d.bbox.x1, "y1": d.bbox.y1, "x2": d.bbox.x2, "y2": d.bbox.y2}}
                           for d in kept],
            "filtered": dict(filtered),
            "latency_ms": {"inference": round(result.inference_ms, 1),
                           "total": round((time.monotonic() - since) * 1000.0, 1)},
            "linewatch_version": __version__,
        }
        if not answer.cancelled():
            answer.set_result((200, payload))


def _image_bytes(body: bytes, content_type: str) -> bytes:
    """The image of a request: the body itself, or the first file part of a multipart/form-data body."""
    if not content_type.lower().startswith("multipart/"):
        return body
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
                                                  + body)
    for part in message.iter_parts() if message.is_multipart() else ():
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes) and payload:
            return payload
    raise ValueError("a multipart body with no file part; send the image as a form file or as the body itself")


def _decode(data: bytes) -> Image:
    """A BGR picture from JPEG or PNG bytes; its size read from its header before it is decoded."""
    if not data:
        raise ValueError("an empty body; send a JPEG or PNG image")
    from PIL import Image as Pil

    try:  # only PIL's JPEG and PNG readers look at it: the header, not the picture
        with Pil.open(io.BytesIO(data), formats=["JPEG", "PNG"]) as header:
            width, height = header.width, header.height
    except Exception:  # PIL raises many kinds for a body that is not a picture
        raise ValueError("not a JPEG or PNG image") from None
    if width * height > MAX_PIXELS:
        raise ValueError(f"a {width}x{height} picture: more than {MAX_PIXELS // 1_000_000} MP pixels")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3:
        raise ValueError("the image is corrupt: it could not be decoded")
    return np.ascontiguousarray(image)
