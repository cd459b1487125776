"""Settings: the root of the settings package, the only module that reads the environment (its sections: the
other modules here, models only).

Loaded once in `cli.main()` and passed down; nothing reads `os.environ` at import time. Every variable is
`LINEWATCH_<SECTION>__<FIELD>`; `LINEWATCH_ENV_FILE` names an optional env file (the environment wins over
it). A wrong value becomes a `ConfigError` carrying one line per problem, each naming the variable.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import socket
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from daemon.redact import redact, redact_url
from daemon.settings.base import model_at, nested_model, unknown_key_hint
from daemon.settings.cameras import CameraConfig, CameraEntry, CameraSettings, check_camera_id
from daemon.settings.envfile import ENV_FILE_VAR, ConfigError, read_env_file
from daemon.settings.events import EventsSettings, RulesSettings, SnapshotSettings, merge_layers
from daemon.settings.jobs import JobsSettings
from daemon.settings.mqtt import MqttSettings, broker_address
from daemon.settings.plc import ModbusSettings, OpcUaSettings
from daemon.settings.reference import ANY_NAME, Variable, variables
from daemon.settings.sections import (
    DEFAULT_MODEL,
    OPENVINO_DIR_SUFFIX,
    DetectSettings,
    HttpSettings,
    LogSettings,
    ModelSettings,
    OutboxSettings,
    PipelineSettings,
)
from daemon.sources.url import SourceKind

ENV_PREFIX = "LINEWATCH_"
CAMERA_URL_VAR = "LINEWATCH_CAMERA__URL"
MAX_CAMERAS = 64


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
    jobs: JobsSettings = Field(default_factory=dict, validate_default=True)  # validated: see Section
    modbus: ModbusSettings = Field(default_factory=dict, validate_default=True)  # validated: see Section
    opcua: OpcUaSettings = Field(default_factory=dict, validate_default=True)  # validated: see Section

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
            if config.camera.trigger == "software" and not config.jobs.enabled:
                raise ValueError(f"{config.env}__TRIGGER=software: the camera is fired once per inspection job, and "
                                 "this camera has none; set LINEWATCH_JOBS__ENABLED=true")
        for name, output in (("MODBUS", self.modbus), ("OPCUA", self.opcua)):
            if output.enabled and not any(config.jobs.enabled for config in self.camera_configs):
                raise ValueError(f"LINEWATCH_{name}__ENABLED: the PLC gets verdicts, and no camera has inspection "
                                 "jobs; set LINEWATCH_JOBS__ENABLED=true")
        return self

    @property
    def camera_configs(self) -> tuple[CameraConfig, ...]:
        """Every camera, in id order."""
        if self.camera is not None:
            return (CameraConfig(self.camera.camera_id, self.camera, self.rules, "LINEWATCH_CAMERA", self.jobs),)
        return tuple(sorted(
            (CameraConfig(entry.id or key, entry, entry.rules or self.rules, f"LINEWATCH_CAMERAS__{key.upper()}",
                          entry.jobs or self.jobs)
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


def reference() -> list[Variable]:
    """Every accepted variable with its type, default, range and description (reference.py)."""
    return variables(Settings, env_name, [Variable(ENV_FILE_VAR, "env file", "path", "", "",
                                                   "Optional env file read before the environment")])


def known_variables() -> dict[str, str]:
    """Every accepted variable name → its description (used for typo checks and `check-config`)."""
    return {v.name: v.description for v in reference()}


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


def http_settings(environ: Mapping[str, str] | None = None) -> HttpSettings:
    """LINEWATCH_HTTP__* alone (the environment over the env file), for `linewatch healthcheck`: a probe every
    30 s must not load and check every other setting. ConfigError when they are wrong."""
    env = dict(os.environ if environ is None else environ)
    file_values = read_env_file(Path(env[ENV_FILE_VAR])) if env.get(ENV_FILE_VAR) else {}
    prefix = f"{ENV_PREFIX}HTTP__"
    fields = {name[len(prefix):].lower(): value for name, value in {**file_values, **env}.items()
              if name.upper().startswith(prefix)}
    try:
        return HttpSettings.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError([_describe({**err, "loc": ("http", *err["loc"])}) for err in exc.errors()]) from None


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


__all__ = ["DEFAULT_MODEL", "OPENVINO_DIR_SUFFIX", "ConfigError", "DetectSettings", "HttpSettings", "LogSettings",
           "ModelSettings", "OutboxSettings", "PipelineSettings", "Settings", "SourceKind", "broker_address",
           "load_settings", "masked_view"]
