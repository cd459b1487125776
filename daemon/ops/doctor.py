"""`linewatch doctor`: what this deployment depends on, checked for real, as text or JSON.

Required checks (the model loads, the camera yields a frame within its deadline, the broker accepts the
configured TLS and credentials, the outbox directory is writable) decide the exit code: 0 when all pass,
3 (BOOT) when one fails. Everything else is reported for the record: versions, GPU, OpenCV build, providers.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from daemon import __version__
from daemon.exitcodes import ExitCode
from daemon.redact import redact
from daemon.settings import Settings, broker_address
from daemon.settings.cameras import CameraSettings
from daemon.sources.base import IDLE


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = False


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _deadline(call: Callable[[], str], seconds: float) -> str:
    """Run a blocking native call on a helper thread; raise TimeoutError if it outlives `seconds`."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["ok"] = call()
        except Exception as exc:
            box["error"] = exc

    worker = threading.Thread(target=target, name="doctor:probe", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimeoutError(f"no answer within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return str(box["ok"])


def _torch_checks() -> list[Check]:
    import torch

    checks = [Check("torch", True, f"{torch.__version__}, built for CUDA {torch.version.cuda or 'none'}")]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        driver = "unknown"
        try:
            import pynvml  # type: ignore[import-untyped]  # nvidia-ml-py

            pynvml.nvmlInit()
            driver = str(pynvml.nvmlSystemGetDriverVersion())
        except Exception:
            driver = "unknown (nvidia-ml-py cannot reach NVML)"
        checks.append(Check("gpu", True, f"{props.name}, {props.total_memory / 1024**3:.1f} GiB, driver {driver}"))
        checks.append(Check("cudnn", True, str(torch.backends.cudnn.version())))  # type: ignore[no-untyped-call]
    else:
        checks.append(Check("gpu", True, "none visible (CUDA not available): inference runs on the CPU"))
    try:
        import tensorrt  # type: ignore[import-not-found]

        checks.append(Check("tensorrt", True, str(tensorrt.__version__)))
    except ImportError:
        checks.append(Check("tensorrt", True, "not installed"))
    return checks


def _opencv_check() -> Check:
    import cv2

    build = cv2.getBuildInformation()

    def flag(name: str) -> str:
        match = re.search(rf"^\s*{name}:\s*(\w+)", build, re.M | re.I)
        return match.group(1).upper() if match else "?"

    return Check("opencv", True, f"{cv2.__version__}: FFmpeg {flag('FFMPEG')}, GStreamer {flag('GStreamer')}, "
                                 f"V4L2 {flag('v4l/v4l2')}")


def _onnx_check() -> Check:
    try:
        import onnxruntime

        providers = ", ".join(onnxruntime.get_available_providers())
        return Check("onnxruntime", True, f"{onnxruntime.__version__}: {providers}")
    except ImportError:
        return Check("onnxruntime", True, "not installed")


def _model_check(settings: Settings) -> Check:
    from daemon.detect.model import Detector, ModelLoadError

    try:
        detector = Detector(settings.model)
    except ModelLoadError as exc:
        return Check("model", False, str(exc), required=True)
    info = detector.info
    unknown = settings.unknown_classes(info.classes)
    if unknown:  # `run` would exit 2 on these once the model is loaded: say so here too
        return Check("model", False, "; ".join(unknown), required=True)
    return Check("model", True, f"{detector.weights} ({detector.backend_name}) sha256 {info.sha256} imgsz {info.imgsz} "
                                f"device {info.device} classes {', '.join(info.classes)}", required=True)


def _camera_checks(settings: Settings) -> list[Check]:
    configs = settings.camera_configs
    return [_camera_check(config.camera, "camera" if len(configs) == 1 else f"camera {config.camera_id}")
            for config in configs]


def _camera_check(camera: CameraSettings, name: str) -> Check:
    from daemon.sources.factory import build_source

    source = build_source(camera.source, camera.source_options())
    deadline = camera.open_timeout_s + camera.read_timeout_s

    def grab() -> str:
        # Closed by the thread that opened it: after a timeout it may still be inside OpenCV, and releasing a
        # capture from another thread while it reads can crash the process.
        try:
            source.open()
            fire = getattr(source, "fire", None)
            if camera.trigger == "software" and fire is not None:
                fire("doctor", 1)  # one exposure, as a job would ask
            image = source.read()
            if image is IDLE:  # a hardware-triggered camera answered and waits for its line: no frame to take
                return "no frame (it waits for its hardware trigger); the camera answers"
            if image is None:
                raise RuntimeError("the source ended before its first frame")
            return f"one {image.shape[1]}x{image.shape[0]} frame"
        finally:
            source.close()

    started = time.monotonic()
    try:
        size = _deadline(grab, deadline)
    except Exception as exc:
        return Check(name, False, f"{source.description}: {exc}", required=True)
    return Check(name, True, f"{source.description}: {size} in {time.monotonic() - started:.2f} s",
                 required=True)


def _genicam_check() -> Check:
    """The GenICam cameras Aravis can see (GigE Vision on every interface, USB3 Vision), for the record."""
    from daemon.sources.base import SourceFatal
    from daemon.sources.genicam_lib import discover, library_version

    try:
        version = library_version()
    except SourceFatal as exc:
        return Check("genicam", True, f"not installed ({exc})")
    try:
        cameras = discover()
    except Exception as exc:  # Aravis' own errors (GLib.Error): reported, never a traceback
        return Check("genicam", True, f"Aravis {version}: discovery failed: {exc}")
    found = "; ".join(f"{c.vendor} {c.model} serial {c.serial} at {c.address} ({c.protocol}) genicam://{c.serial}"
                      for c in cameras)
    return Check("genicam", True, f"Aravis {version}: {len(cameras)} camera(s){': ' + found if found else ''}")


def _broker_check(settings: Settings, timeout_s: float = 10.0) -> Check:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    from daemon.publish.tls import build_tls_context

    mqtt = settings.mqtt
    host, port, tls = broker_address(mqtt.url)
    answered = threading.Event()
    result: dict[str, str] = {}

    def on_connect(client: paho.Client, _: Any, __: Any, reason: Any, ___: Any) -> None:
        result["reason"] = "" if not reason.is_failure else f"refused: {reason}"
        answered.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"linewatch-doctor-{os.getpid()}",
                         protocol=MQTTProtocolVersion.MQTTv5 if mqtt.protocol == "5" else MQTTProtocolVersion.MQTTv311)
    client.on_connect = on_connect
    try:
        if tls:
            client.tls_set_context(build_tls_context(mqtt))
            if mqtt.tls_insecure:
                client.tls_insecure_set(True)
        if mqtt.username:
            client.username_pw_set(mqtt.username, mqtt.password_value())
        client.connect(host, port, keepalive=10)
        client.loop_start()
        if not answered.wait(timeout_s):
            return Check("broker", False, f"{host}:{port}: no CONNACK within {timeout_s:g} s", required=True)
    except Exception as exc:
        return Check("broker", False, f"{host}:{port}: {exc}", required=True)
    finally:
        client.disconnect()
        client.loop_stop()
    if result["reason"]:
        return Check("broker", False, f"{host}:{port}: {result['reason']}", required=True)
    auth = f"user {mqtt.username}" if mqtt.username else "anonymous"
    return Check("broker", True, f"{host}:{port} accepted ({'TLS' if tls else 'plain'}, {auth})", required=True)


def _outbox_check(settings: Settings) -> Check:
    directory = Path(settings.outbox.dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check("outbox", False, f"{directory} is not writable: {exc.strerror or exc}", required=True)
    free = shutil.disk_usage(directory).free
    return Check("outbox", True, f"{directory} writable, {free / 1024**2:.0f} MiB free", required=True)


def run_checks(settings: Settings) -> list[Check]:
    checks = [
        Check("linewatch", True, __version__),
        Check("python", True, f"{platform.python_version()} ({platform.machine()})"),
        Check("ultralytics", True, _version("ultralytics")),
    ]
    for probe in (_torch_checks,):
        checks += probe()
    checks += [_opencv_check(), _onnx_check(), _genicam_check()]
    checks += [_model_check(settings), *_camera_checks(settings), _broker_check(settings), _outbox_check(settings)]
    return checks


def doctor(settings: Settings, *, as_json: bool) -> int:
    # An exception's text (OpenCV, paho, OpenSSL) may quote a URL with its credentials.
    checks = [Check(c.name, c.ok, redact(c.detail), c.required) for c in run_checks(settings)]
    failed = [c for c in checks if c.required and not c.ok]
    code = ExitCode.BOOT if failed else ExitCode.OK
    if as_json:
        print(json.dumps({"ok": not failed, "exit_code": int(code), "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        for check in checks:
            mark = "ok  " if check.ok else "FAIL"
            print(f"{mark} {check.name:12} {check.detail}{'' if check.ok or not check.required else '  (required)'}")
        print(f"doctor: {'all required checks passed' if not failed else f'{len(failed)} required check(s) failed'}")
    return code
