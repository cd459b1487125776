"""The settings sections of the model, the inference and the process (LINEWATCH_MODEL__, DETECT__, LOG__,
OUTBOX__, PIPELINE__, HTTP__); models only: the package root (`__init__.py`) reads the environment and composes
the root."""

from __future__ import annotations

import os
import re
import socket
import stat
import sys
import threading
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from daemon.files import is_regular_file, read_secret, stat_or_none
from daemon.settings.base import Section

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_FILE = "linewatch-defects.pt"
# Where the shipped model is: beside the sources (a checkout, an editable install), or where `pip install`
# put it (pyproject.toml's data-files: <prefix>/share/linewatch/models).
MODEL_DIRS = (REPO_ROOT / "models", Path(sys.prefix) / "share" / "linewatch" / "models")
DEFAULT_MODEL = next((d / MODEL_FILE for d in MODEL_DIRS if (d / MODEL_FILE).is_file()), MODEL_DIRS[0] / MODEL_FILE)
MODEL_SUFFIXES = (".pt", ".onnx", ".engine", ".torchscript")
OPENVINO_DIR_SUFFIX = "_openvino_model"  # how Ultralytics names an OpenVINO export (a folder)
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda|cuda:\d+)$")


_RESOLVE_S = 2.0


def resolve_bind_address(host: str, port: int) -> None:
    """ValueError unless `host` is an address or a name this machine resolves (within a deadline: a resolver that
    does not answer must not hang check-config)."""
    answer: list[str] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            answer.append("")
        except (OSError, UnicodeError, ValueError) as exc:
            answer.append(str(exc) or type(exc).__name__)

    worker = threading.Thread(target=lookup, name="config:resolve", daemon=True)
    worker.start()
    worker.join(_RESOLVE_S)
    if not answer:
        raise ValueError(f"{host!r} did not resolve within {_RESOLVE_S:g} s")
    if answer[0]:
        raise ValueError(f"{host!r} is not an address this machine has or resolves ({answer[0]})")


def _default_state_dir() -> Path:
    # systemd's StateDirectory= exports STATE_DIRECTORY; the container image sets LINEWATCH_OUTBOX__DIR.
    return Path(os.environ.get("STATE_DIRECTORY", "/var/lib/linewatch"))


class ModelSettings(Section):
    path: Path = Field(
        DEFAULT_MODEL, description="YOLO weights: a .pt (its exports beside it), or one export (.onnx, "
        "<stem>_openvino_model/, .engine)",
        json_schema_extra={"default_shown": "the shipped model: models/linewatch-defects.pt beside the sources, else "
                           "<prefix>/share/linewatch/models/linewatch-defects.pt, where pip install puts it"})
    backend: Literal["auto", "pt", "onnx", "openvino", "engine"] = Field(
        "auto", description="Runtime; auto: the fastest export beside the .pt this device can run "
        "(CUDA: engine > pt; CPU: openvino > onnx > pt)")
    device: str = Field("auto", description="auto|cpu|cuda|cuda:N; auto picks CUDA when available")
    imgsz: int | None = Field(
        None, ge=32, le=4096, description="Inference size in pixels; default: the model's training size")
    # The floor handed to the model: nothing below it is ever seen. Above it the rules decide what is a defect
    # (LINEWATCH_RULES__MIN_CONFIDENCE, 0.7 by default); weaker detections still keep a defect's track alive.
    confidence: float = Field(0.25, gt=0, le=1, description="Floor handed to the model (rules decide above it)")
    iou: float = Field(0.45, gt=0, le=1, description="NMS IoU threshold")
    half: bool = Field(False, description="FP16 inference (CUDA only; ignored on CPU)")
    streams: int | None = Field(
        None, ge=1, le=16,
        description="Inferences run side by side, each on its own copy of the model; default: CPU: as many as fill "
        "the container's CPU quota at THREADS each (1 each when unset), at most 4; GPU: 1")
    threads: int | None = Field(
        None, ge=1, le=256,
        description="CPU threads of each stream (torch, ONNX Runtime, OpenVINO; and OpenCV's); default: one stream: "
        "the CPU quota less one; several: the quota shared among them; at least 1")
    gpu_memory_fraction: float | None = Field(
        None, gt=0, le=1, description="CUDA: cap this process at this fraction of the GPU's memory")
    warmup_runs: int = Field(2, ge=0, le=50, description="Inferences run before the daemon reports ready")

    @field_validator("path")
    @classmethod
    def _weights_readable(cls, value: Path) -> Path:
        if value.name.endswith(OPENVINO_DIR_SUFFIX):
            info = stat_or_none(value)
            if info is None or not stat.S_ISDIR(info.st_mode) or not any(value.glob("*.xml")):
                raise ValueError(f"{str(value)!r} is not an OpenVINO export folder (no .xml model in it)")
            return value
        if value.suffix not in MODEL_SUFFIXES:
            raise ValueError(f"{str(value)!r} has an unknown suffix; accepted: {', '.join(MODEL_SUFFIXES)} "
                             f"or a *{OPENVINO_DIR_SUFFIX} folder")
        if not is_regular_file(value):
            raise ValueError(f"no model file at {str(value)!r}; give the path of a YOLO weights file")
        if not os.access(value, os.R_OK):
            raise ValueError(f"{str(value)!r} is not readable by this user")
        return value

    @field_validator("device")
    @classmethod
    def _device_known(cls, value: str) -> str:
        if not _DEVICE.fullmatch(value):
            raise ValueError(f"unknown device {value!r}; accepted: auto, cpu, cuda, cuda:N, mps")
        return value

    @field_validator("imgsz")
    @classmethod
    def _imgsz_stride(cls, value: int | None) -> int | None:
        if value is not None and (value <= 0 or value % 32 or value > 4096):
            raise ValueError(f"{value} is not a positive multiple of 32 up to 4096 (YOLO's stride)")
        return value


class DetectSettings(Section):
    max_batch: int = Field(
        8, ge=1, le=64, description="Most frames in one batched inference (a live camera gives one, a file or "
        "triggered camera the frames waiting in its hand-off); 1: no batching")
    batch_wait_ms: float = Field(
        5.0, ge=0, le=1000, description="How long the detector waits for the other cameras' frames to fill a batch")


class LogSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Minimum level")
    format: Literal["json", "console", "auto"] = Field("auto", description="auto: console on a TTY, else json")


class OutboxSettings(Section):
    dir: Path = Field(default_factory=_default_state_dir, description="State directory (outbox database)")
    max_mb: float = Field(256.0, gt=0, le=1024 * 1024, description="Outbox size bound; the oldest events go beyond it")
    max_age_h: float = Field(168.0, gt=0, le=87600, description="Outbox age bound; older events are dropped")
    sync: Literal["full", "normal"] = Field("full", description="SQLite fsync policy; full survives power loss")
    snapshot_max_mb: float = Field(
        64.0, gt=0, le=65536, description="Snapshots' own bound in the outbox; pictures go before any defect event")
    verdict_max_mb: float = Field(
        16.0, gt=0, le=65536, description="Verdicts' own bound in the outbox (about 1,000 verdicts a megabyte)")
    reserve_mb: float = Field(
        8.0, ge=0, le=1024,
        description="Disk space set aside beside the outbox, lent to SQLite when the disk fills up; 0: none")

    @field_validator("dir")
    @classmethod
    def _dir_usable(cls, value: Path) -> Path:
        """The directory, or the nearest folder above it that exists (run creates the rest), is writable."""
        existing = value
        while (info := stat_or_none(existing)) is None and existing != existing.parent:
            existing = existing.parent
        if info is None or not stat.S_ISDIR(info.st_mode):
            raise ValueError(f"{str(existing)!r} is not a directory")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"{str(existing)!r} is not writable by this user (uid {os.geteuid()})")
        return value


class PipelineSettings(Section):
    shutdown_timeout_s: float = Field(8.0, gt=0, le=120, description="Deadline for a graceful stop")
    wedge_timeout_s: float = Field(
        30.0, gt=0, le=3600,
        description="A stage stuck in one inference, commit, connect or network pass this long is wedged: /healthz 503")
    unhealthy_exit_s: float = Field(
        60.0, ge=1, le=86400,
        description="Not live (/healthz 503) this long without a break: the daemon exits 5 by itself, so any "
        "supervisor (Docker's on-failure, a bare process) restarts it, not only systemd's watchdog")


_BEARER_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # RFC 6750 b64token


class HttpSettings(Section):
    enabled: bool = Field(True, description="Serve /healthz, /readyz and /metrics")
    host: str = Field("0.0.0.0", max_length=253,
                      description="Bind address of the ops HTTP server (127.0.0.1: this host only)")
    port: int = Field(9464, ge=1, le=65535, description="Port of the ops HTTP server")
    triggers: bool = Field(False, description="Accept POST /cameras/<id>/trigger (starts an inspection job): off "
                           "unless asked for, as anyone who reaches the port could trigger")
    detect: bool = Field(False, description="Accept POST /detect: one image inspected on demand by the loaded model "
                         "(the cameras keep priority); off unless asked for")
    detect_token_file: Path | None = Field(None, description="/detect: file holding a bearer token that each request "
                                           "must send (Authorization: Bearer …); default: none asked")
    detect_max_mb: float = Field(20.0, gt=0, le=512, description="/detect: the largest request body, in MiB (413 "
                                 "above)")
    detect_queue: int = Field(4, ge=1, le=256, description="/detect: requests waiting or in the model at once (429 "
                              "above)")
    detect_timeout_s: float = Field(10.0, gt=0, le=300, description="/detect: the answer's deadline once the body is "
                                    "read (504 after)")

    @field_validator("host")
    @classmethod
    def _host_resolves(cls, value: str) -> str:
        if value:  # "": every interface
            resolve_bind_address(value, 9464)
        return value

    @field_validator("detect_token_file")
    @classmethod
    def _token_readable(cls, value: Path | None) -> Path | None:
        if value is None:
            return value
        token = read_secret(value)
        if not token:
            raise ValueError(f"{str(value)!r} is empty: a bearer token file holds the token")
        if not _BEARER_TOKEN.fullmatch(token):  # the token itself is never printed
            raise ValueError(f"{str(value)!r} does not hold a bearer token: one line of letters, digits and "
                             "-._~+/ (then = padding), as RFC 6750 has it")
        return value


