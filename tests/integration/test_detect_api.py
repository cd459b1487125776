"""POST /detect on a running daemon with the real model and a real mosquitto: its answers against the model's
own, its refusals (token, size, corrupt and oversized pictures, unknown camera, a full queue), and the cameras'
throughput while it is under load (measured from /metrics, not assumed)."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np
import pytest

from daemon.detect.model import Detector
from daemon.events.rules import Rules
from daemon.metrics import Metrics
from daemon.ops.health import Health
from daemon.ops.http import OpsHttpServer
from daemon.settings import ModelSettings
from daemon.settings.events import RulesSettings
from daemon.synthetic.line import LineParams, SyntheticLine
from tests.integration.ops_helpers import wait_probe
from tests.support.mosquitto import Mosquitto
from tests.support.net import free_port
from tests.support.procs import DaemonProcess

pytestmark = pytest.mark.integration
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "detections-v1.schema.json").read_text())
TOKEN = "s3cret-token-for-the-line"


def _post(port: int, body: bytes, content_type: str = "image/png", query: str = "", token: str | None = TOKEN,
          timeout: float = 30.0) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"http://127.0.0.1:{port}/detect{query}", data=body, headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def _start(daemon_factory: Callable[..., DaemonProcess], daemon_env: Callable[..., dict[str, str]],
           broker: str, tmp_path: Path, **extra: str) -> int:
    token_file = tmp_path / "detect.token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    env = daemon_env("synthetic://line?fps=5&seed=11", broker, LINEWATCH_HTTP__PORT=str(port),
                     LINEWATCH_HTTP__DETECT="true", LINEWATCH_HTTP__DETECT_TOKEN_FILE=str(token_file),
                     LINEWATCH_CAMERA__ID="line1", **extra)
    daemon_factory(env)
    wait_probe(port, "/readyz", lambda code, body: code == 200, 120)
    return port


def test_detect_answers_what_the_model_finds_after_the_rules_and_refuses_what_it_cannot_inspect(
        mosquitto: Mosquitto, daemon_factory: Callable[..., DaemonProcess],
        daemon_env: Callable[..., dict[str, str]], model_path: Path, tmp_path: Path) -> None:
    port = _start(daemon_factory, daemon_env, mosquitto.url, tmp_path, LINEWATCH_HTTP__DETECT_MAX_MB="1")
    image = SyntheticLine(LineParams(seed=40, defect_rate=1.0)).render(30).image
    # The model's own answer for the same image, and the default rules (threshold 0.7)
    detector = Detector(ModelSettings(path=model_path))
    rules = Rules(RulesSettings(), detector.info.classes, ModelSettings().confidence)
    expected = [d for d in detector.infer(image)[0] if rules.refuse(d, 640, 480) is None and rules.strong(d)]
    assert expected, "the synthetic frame has defects the model finds"

    code, answer = _post(port, _png(image))
    assert code == 200, answer
    jsonschema.validate(answer, SCHEMA)
    assert answer["camera_id"] is None and answer["tiles"] == 0 and answer["image"] == {"width": 640, "height": 480}
    assert answer["model"]["sha256"] == detector.info.sha256
    found = sorted((d["label"], d["bbox"]["x1"], d["bbox"]["y1"]) for d in answer["detections"])
    assert [f[0] for f in found] == sorted(d.label for d in expected)
    for (_, x1, y1), d in zip(found, sorted(expected, key=lambda d: (d.label, d.bbox.x1, d.bbox.y1)), strict=True):
        assert abs(x1 - d.bbox.x1) < 2 and abs(y1 - d.bbox.y1) < 2
    # A JPEG as a multipart form's file, for the camera it names (its id, its rules)
    jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    boundary = uuid.uuid4().hex
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"part.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + jpeg + f"\r\n--{boundary}--\r\n".encode()
    code, answer = _post(port, form, f"multipart/form-data; boundary={boundary}", "?camera=line1")
    assert code == 200 and answer["camera_id"] == "line1" and answer["detections"], answer
    jsonschema.validate(answer, SCHEMA)
    # Refusals: each with its status and a one-line reason, never a traceback
    # (refused from the head, before the body is read: a small body, so that the client is not still sending it)
    assert _post(port, _png(image[:8, :8]), token=None)[0] == 401
    assert _post(port, _png(image[:8, :8]), token="wrong")[0] == 401
    assert _post(port, b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)[0] == 400  # corrupt
    assert _post(port, b"")[0] == 400
    assert _post(port, _png(image), query="?camera=nope")[0] == 404
    # A body over the limit (1 MiB here) is refused from its Content-Length, before a byte of it is read (a raw
    # socket: a client still sending would meet the closed connection, as it should)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(f"POST /detect HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: image/png\r\n"
                    f"Content-Length: {2_400_000}\r\n\r\n".encode())
        reply = b""
        while chunk := raw.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ") and b"DETECT_MAX_MB" in body
    # A tiny PNG that claims a 20000 x 20000 picture is refused from its header, before it is decoded
    header = _png(np.zeros((8, 8, 3), np.uint8))
    bomb = header[:16] + (20000).to_bytes(4, "big") + (20000).to_bytes(4, "big") + header[24:]
    code, answer = _post(port, bomb)
    assert code in (400, 413) and "Traceback" not in json.dumps(answer)
    # The ops endpoints stay open to probes, without a token
    assert wait_probe(port, "/healthz", lambda code, body: code == 200, 10)["status"] == "ok"


def test_a_full_detect_queue_answers_429_and_the_cameras_lose_no_frame_while_it_is_under_load(
        mosquitto: Mosquitto, daemon_factory: Callable[..., DaemonProcess],
        daemon_env: Callable[..., dict[str, str]], tmp_path: Path) -> None:
    port = _start(daemon_factory, daemon_env, mosquitto.url, tmp_path, LINEWATCH_HTTP__DETECT_QUEUE="2",
                  LINEWATCH_HTTP__DETECT_TIMEOUT_S="30")
    body = _png(SyntheticLine(LineParams(seed=41, defect_rate=1.0)).render(10).image)

    def metric(name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") and 'camera="line1"' in line)

    read0, inspected0, dropped0 = (metric(f"linewatch_frames_{n}_total") for n in ("read", "inspected", "dropped"))
    started = time.monotonic()
    codes: Counter[int] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            code, _ = _post(port, body)
            with lock:
                codes[code] += 1

    clients = [threading.Thread(target=client) for _ in range(6)]
    for thread in clients:
        thread.start()
    stop.wait(6.0)  # the load lasts this long: the measurement window, not a synchronisation
    stop.set()
    for thread in clients:
        thread.join(60)
    elapsed = time.monotonic() - started
    read, inspected, dropped = (metric(f"linewatch_frames_{n}_total") for n in ("read", "inspected", "dropped"))
    # Then beyond two requests at once the answer is 429, and the rest were inspected ...
    assert codes[429] > 0 and codes[200] > 0, codes
    assert set(codes) <= {200, 429}, codes
    # ... while the 5 fps camera went on at its pace: every frame it read was inspected, none dropped
    assert dropped == dropped0
    assert (read - read0) / elapsed > 4.0
    assert inspected - inspected0 >= read - read0 - 1


def test_detect_is_503_until_the_model_is_ready_and_404_when_not_enabled() -> None:
    metrics = Metrics()
    for enabled, expected in ((True, 503), (False, 404)):
        server = OpsHttpServer("127.0.0.1", free_port(), metrics, Health(metrics), detect=enabled)
        server.start()
        try:
            assert _post(server.port, b"x", token=None)[0] == expected
        finally:
            server.stop()
