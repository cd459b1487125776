"""Settings: the only module that reads the environment.

Loaded once in `cli.main()` and passed down; nothing reads `os.environ` at import time. Every variable is
`LINEWATCH_<SECTION>__<FIELD>`; `LINEWATCH_ENV_FILE` names an optional env file (the environment wins over
it). A wrong value becomes a `ConfigError` carrying one line per problem, each naming the variable.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import os
import re
import socket
import stat
import sys
import threading
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from dotenv.parser import parse_stream
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from daemon.files import is_regular_file, read_small_file, stat_or_none
from daemon.redact import redact, redact_url
from daemon.settings_base import Section, model_at, nested_model, unknown_key_hint
from daemon.settings_cameras import CameraConfig, CameraEntry, CameraSettings, check_camera_id
from daemon.settings_events import EventsSettings, RulesSettings, SnapshotSettings, merge_layers
from daemon.settings_mqtt import MqttSettings, broker_address
from daemon.sources.url import SourceKind

ENV_PREFIX = "LINEWATCH_"
ENV_FILE_VAR = "LINEWATCH_ENV_FILE"
CAMERA_URL_VAR = "LINEWATCH_CAMERA__URL"
REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_FILE = "linewatch-defects.pt"
# Where the shipped model is: beside the sources (a checkout, an editable install), or where `pip install`
# put it (pyproject.toml's data-files: <prefix>/share/linewatch/models).
MODEL_DIRS = (REPO_ROOT / "models", Path(sys.prefix) / "share" / "linewatch" / "models")
DEFAULT_MODEL = next((d / MODEL_FILE for d in MODEL_DIRS if (d / MODEL_FILE).is_file()), MODEL_DIRS[0] / MODEL_FILE)
MODEL_SUFFIXES = (".pt", ".onnx", ".engine", ".torchscript")
OPENVINO_DIR_SUFFIX = "_openvino_model"  # how Ultralytics names an OpenVINO export (a folder)
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda|cuda:\d+)$")
MAX_CAMERAS = 64


_LINE_MAX = 400  # a problem line longer than this is cut in the middle: its variable and its hint stay


def _one_line(problem: str) -> str:
    text = " ".join(problem.split())
    return text if len(text) <= _LINE_MAX else f"{text[:_LINE_MAX // 2]} […] {text[-_LINE_MAX // 2:]}"


class ConfigError(Exception):
    """Invalid configuration: `problems` holds one human line per problem (exit code 2), each on one line, of
    bounded length, with credentials redacted (a value may be a camera URL with its password)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = [redact(_one_line(problem)) for problem in problems]
        super().__init__("\n".join(self.problems))


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
        "<stem>_openvino_model/, .engine)")
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
        8, ge=1, le=64, description="Most frames in one batched inference (one per camera at most); 1: no batching")
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


class HttpSettings(Section):
    enabled: bool = Field(True, description="Serve /healthz, /readyz and /metrics")
    host: str = Field("0.0.0.0", max_length=253,
                      description="Bind address of the ops HTTP server (127.0.0.1: this host only)")
    port: int = Field(9464, ge=1, le=65535, description="Port of the ops HTTP server")

    @field_validator("host")
    @classmethod
    def _host_resolves(cls, value: str) -> str:
        if value:  # "": every interface
            resolve_bind_address(value, 9464)
        return value


# The variables load_settings() was given: the process environment over the env file's.
_ENVIRON: ContextVar[Mapping[str, str]] = ContextVar("linewatch_environ")


class _GivenEnvironment(EnvSettingsSource):
    """pydantic-settings' environment source, reading the mapping load_settings() was given instead of
    os.environ (the env file is read, bounded and checked, by load_settings itself)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        given = _ENVIRON.get(os.environ)
        return {name.lower(): value for name, value in given.items() if name.upper().startswith(ENV_PREFIX)}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True, case_sensitive=False,
        allow_inf_nan=False,
    )

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _GivenEnvironment(settings_cls)

    # One camera (the shorthand) or several, each by its id; never both. See `camera_configs`.
    camera: CameraSettings | None = Field(None, description="One camera: LINEWATCH_CAMERA__<FIELD>")
    cameras: dict[str, CameraEntry] = Field(
        default_factory=dict, description="Several cameras: LINEWATCH_CAMERAS__<ID>__<FIELD>")
    model: ModelSettings = Field(default_factory=dict, validate_default=True)  # validated: see Section
    detect: DetectSettings = Field(default_factory=dict, validate_default=True)  # validated: see Section
    mqtt: MqttSettings = Field(default_factory=dict, validate_default=True)  # validated: see Section
    log: LogSettings = Field(default_factory=dict, validate_default=True)  # validated: see Section
    outbox: OutboxSettings = Field(default_factory=dict, validate_default=True)  # validated: see Section
    pipeline: PipelineSettings = Field(default_factory=dict, validate_default=True)  # validated: see Section
    http: HttpSettings = Field(default_factory=dict, validate_default=True)  # validated: see Section
    events: EventsSettings = Field(default_factory=dict, validate_default=True)  # validated: see Section
    rules: RulesSettings = Field(default_factory=dict, validate_default=True)  # validated: see Section
    snapshots: SnapshotSettings = Field(default_factory=dict, validate_default=True)  # validated: see Section

    @field_validator("cameras", mode="before")
    @classmethod
    def _keys_lower_case(cls, value: Any) -> Any:
        """Variables' <ID> arrive lower-cased, JSON keys as written: fold them, so both forms name one camera."""
        if not isinstance(value, dict):
            return value
        folded: dict[str, Any] = {}
        for key, entry in value.items():
            name = str(key).lower()
            both = isinstance(folded.get(name), dict) and isinstance(entry, dict)
            folded[name] = merge_layers(folded[name], entry) if both else entry
        return folded

    @model_validator(mode="after")
    def _one_camera_form(self) -> Settings:
        if self.camera is None and not self.cameras:
            raise ValueError(f"{CAMERA_URL_VAR}: required but not set (or LINEWATCH_CAMERAS__<ID>__URL for several "
                             "cameras)")
        if self.camera is not None and self.cameras:
            raise ValueError("LINEWATCH_CAMERA__* and LINEWATCH_CAMERAS__<ID>__* are both set: use one form "
                             "(LINEWATCH_CAMERA__* is the shorthand for a single camera)")
        if len(self.cameras) > MAX_CAMERAS:
            raise ValueError(f"LINEWATCH_CAMERAS: {len(self.cameras)} cameras; at most {MAX_CAMERAS} per process")
        for key in self.cameras:
            try:
                check_camera_id(key)
            except ValueError as exc:
                raise ValueError(f"LINEWATCH_CAMERAS__{key.upper()}__*: camera id {exc}") from None
        seen: dict[str, str] = {}
        for config in self.camera_configs:
            try:
                check_camera_id(config.camera_id)  # also an id derived from the URL
            except ValueError as exc:
                raise ValueError(f"{config.env}__ID: camera id {exc}; set another") from None
            folded = config.camera_id.lower()  # topics are case-sensitive, people and dashboards are not
            if folded in seen:
                raise ValueError(f"{seen[folded]} and {config.env} have the same camera id "
                                 f"{config.camera_id!r}; set a distinct {config.env}__ID")
            seen[folded] = config.env
        return self

    @property
    def camera_configs(self) -> tuple[CameraConfig, ...]:
        """Every camera, in id order."""
        if self.camera is not None:
            return (CameraConfig(self.camera.camera_id, self.camera, self.rules, "LINEWATCH_CAMERA"),)
        return tuple(sorted(
            (CameraConfig(entry.id or key, entry, entry.rules or self.rules, f"LINEWATCH_CAMERAS__{key.upper()}")
             for key, entry in self.cameras.items()), key=lambda config: config.camera_id))

    def unknown_classes(self, known: tuple[str, ...]) -> list[str]:
        """Rules (global and per camera) naming a class the model does not have; checked once it is loaded."""
        problems = self.rules.unknown_classes(known)
        for key, entry in sorted(self.cameras.items()):
            if entry.rules is not None:
                problems += entry.rules.unknown_classes(known, f"LINEWATCH_CAMERAS__{key.upper()}__RULES")
        return problems

    @property
    def mqtt_client_id(self) -> str:
        """Default: linewatch-<host>-<camera id>[-<id>…], kept under 64 characters. The host's name is in it, so
        two stations whose cameras have the same id (video0) do not take over each other's MQTT session."""
        if self.mqtt.client_id:
            return self.mqtt.client_id
        host = re.sub(r"[^A-Za-z0-9_.-]+", "-", socket.gethostname()).strip("-.")[:40] or "host"
        joined = f"linewatch-{host}-" + "-".join(config.camera_id for config in self.camera_configs)
        if len(joined) <= 64:
            return joined
        digest = hashlib.sha256(joined.encode()).hexdigest()[:10]
        return f"{joined[:53]}-{digest}"


def env_name(loc: Iterable[int | str]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


ANY_NAME = "<NAME>"  # a dict key in a variable name, e.g. the class in LINEWATCH_RULES__CLASSES__<NAME>__IGNORE


def known_variables() -> dict[str, str]:
    """Every accepted variable name → its description (used for typo checks and `check-config`)."""
    known = {ENV_FILE_VAR: "Optional env file read before the environment"}

    def walk(model: type[BaseModel], loc: tuple[str, ...]) -> None:
        for name, sub in model.model_fields.items():
            nested, is_map = nested_model(sub.annotation)
            if nested is not None and not is_map:
                if loc:  # a nested section is also accepted whole, as JSON
                    known[env_name((*loc, name))] = sub.description or ""
                walk(nested, (*loc, name))
            elif nested is not None:
                known[env_name((*loc, name))] = (sub.description or "") + " (or the whole map as one JSON object)"
                walk(nested, (*loc, name, ANY_NAME))
            else:
                known[env_name((*loc, name))] = sub.description or ""

    walk(Settings, ())
    return known


def _is_known(name: str, known: dict[str, str]) -> bool:
    if name in known:
        return True
    patterns = (re.escape(k).replace(re.escape(ANY_NAME), "[A-Z0-9_.-]+?") for k in known if ANY_NAME in k)
    return any(re.fullmatch(pattern, name) for pattern in patterns)


def _unknown_variables(names: Iterable[str], origin: str) -> list[str]:
    known = known_variables()
    problems = []
    for name in sorted({n.upper() for n in names if n.upper().startswith(ENV_PREFIX)}):
        if _is_known(name, known):
            continue
        close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else "; see `linewatch check-config --list`"
        problems.append(f"{name}: unknown variable{origin}{hint}")
    return problems


def _takes_json(name: str) -> bool:
    """Whether the variable `name` holds a JSON value (a section or map given whole, a list of polygons)."""
    parts = name.upper().removeprefix(ENV_PREFIX).lower().split("__")
    model: type[BaseModel] = Settings
    while parts:
        field = model.model_fields.get(parts.pop(0))
        if field is None:
            return False
        sub, is_map = nested_model(field.annotation)
        if not parts:
            return sub is not None or "list[" in str(field.annotation)
        if sub is None or (is_map and not parts.pop(0)):
            return False
        model = sub
    return False


def _unparsable_json(env: Mapping[str, str]) -> list[str]:
    """Each JSON-valued variable that does not parse, by name (pydantic-settings would name only its section,
    and a value nested too deep would raise RecursionError from inside it)."""
    problems = []
    for name, value in sorted(env.items()):
        if name.upper().startswith(ENV_PREFIX) and _takes_json(name):
            try:
                json.loads(value)
            except (ValueError, RecursionError) as exc:
                problems.append(f"{name.upper()}: not valid JSON ({exc}); this setting takes a JSON value")
    return problems


# Errors raised by a whole section's validator (location ending in the first), and the field that caused them.
_SECTION_ERRORS = (
    ("rules", "inline JSON", "inline"),
    ("rules", "rules file", "file"),
    ("events", "confirm_hits", "confirm_hits"),
)


def _shown(value: object) -> str:
    text = repr(str(value) if isinstance(value, Path) else value)
    return text if len(text) <= 80 else f"{text[:60]}…{text[-12:]} ({len(text)} characters)"


def _describe(error: ErrorDetails) -> str:
    loc = tuple(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    for section, needle, field in _SECTION_ERRORS:
        if loc[-1:] == (section,) and needle in message:
            loc = (*loc, field)
            break
    if not loc or message.startswith(ENV_PREFIX):  # a validator over several variables: its message names them
        return message
    if error["type"] == "missing":
        return f"{env_name(loc)}: required but not set"
    if error["type"] == "extra_forbidden":
        model = model_at(Settings, loc[:-1])
        hint = unknown_key_hint(model, loc[-1]) if model is not None else ""
        return f"{env_name(loc)}: unknown setting {loc[-1]!r} (a variable, or a key of a JSON value){hint}"
    shown = error.get("input")
    if loc[-1] == "url" and isinstance(shown, str):
        shown = redact_url(shown)
    secret = any("password" in part for part in loc)
    quiet = secret or isinstance(shown, dict | list) or repr(shown) in message
    return f"{env_name(loc)}: {message}{'' if quiet else f' (got {_shown(shown)})'}"


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of an env file: a small regular UTF-8 file (ConfigError naming LINEWATCH_ENV_FILE else)."""
    try:
        data = read_small_file(path)
    except ValueError as exc:
        raise ConfigError([f"{ENV_FILE_VAR}: {exc}"]) from None
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{ENV_FILE_VAR}: {str(path)!r} is not UTF-8 text (byte {data[exc.start]:#04x} on "
                           f"line {line}); save it as UTF-8"]) from None
    values: dict[str, str] = {}
    problems = []
    for binding in parse_stream(io.StringIO(text)):
        where = f"line {binding.original.line} of {str(path)!r}"
        after = binding.original.string.partition("=")[2]
        if binding.error:
            problems.append(f"{ENV_FILE_VAR}: {where} is not NAME=value: {binding.original.string.strip()[:60]!r}")
        elif binding.key is None:  # a comment or a blank line
            continue
        elif binding.value is None:
            problems.append(f"{ENV_FILE_VAR}: {where}: {binding.key} has no '='; write {binding.key}= for an empty "
                            "value")
        elif "#" in after and "#" not in binding.value:
            # python-dotenv drops it; systemd's EnvironmentFile= and `docker --env-file` keep it in the value.
            problems.append(f"{ENV_FILE_VAR}: {where}: {binding.key} has a comment after its value, which systemd and "
                            "Docker read as part of the value; put the comment on a line of its own")
        else:
            values[binding.key] = binding.value
    if problems:
        raise ConfigError(problems)
    return values


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the configuration once: `environ` (default: the process environment) over the env file
    it names. Raises ConfigError listing every problem; nothing else, whatever the input."""
    env = dict(os.environ if environ is None else environ)
    problems: list[str] = []
    file_values: dict[str, str] = {}
    if env_file := env.get(ENV_FILE_VAR):
        file_values = read_env_file(Path(env_file))
        problems += _unknown_variables(file_values, f" in {env_file}")
    problems += _unknown_variables(env, "")
    merged = {**file_values, **env}
    unparsable = _unparsable_json(merged)
    if unparsable:
        raise ConfigError(problems + unparsable)
    token = _ENVIRON.set(merged)
    try:
        settings = Settings()  # type: ignore[call-arg]  # the fields come from the environment
    except ValidationError as exc:
        unknown = {problem.split(":", 1)[0] for problem in problems}
        described = [_describe(err) for err in exc.errors()]
        problems += [line for line in described if line.split(":", 1)[0] not in unknown]
    except (SettingsError, RecursionError) as exc:  # a value pydantic-settings could not decode: name its section
        field = re.search(r'field "(\w+)"', str(exc))
        problems.append(f"{env_name((field[1] if field else 'settings',))}: {exc}")
    finally:
        _ENVIRON.reset(token)
    if problems:
        raise ConfigError(problems)
    return settings


def masked_view(settings: Settings) -> dict[str, object]:
    """Effective settings as env-variable → value, secrets masked (for `check-config`)."""
    view: dict[str, object] = {}

    def section(loc: tuple[str, ...], values: dict[str, object]) -> None:
        for name, value in values.items():
            view[env_name((*loc, name))] = "********" if name == "password" and value is not None else value

    for name in Settings.model_fields:
        if name == "cameras":
            for key, entry in settings.cameras.items():
                section((name, key), entry.model_dump(mode="json"))
        elif (value := getattr(settings, name)) is not None:
            section((name,), value.model_dump(mode="json"))
    for config in settings.camera_configs:
        view[f"(effective) {config.env} id"] = config.camera_id
        view[f"(effective) {config.env} source kind"] = config.camera.source.kind.value
    view["(effective) mqtt client id"] = settings.mqtt_client_id
    return {name: (redact_url if name.endswith("__URL") else redact)(value) if isinstance(value, str) else value
            for name, value in view.items()}


__all__ = ["ConfigError", "Settings", "SourceKind", "broker_address", "load_settings", "masked_view"]
