"""The MQTT section (LINEWATCH_MQTT__*): the broker, credentials, TLS files and the topic prefix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from daemon.settings_base import Section, read_small_file
from daemon.settings_cameras import TOPIC_WORD


class MqttSettings(Section):
    url: str = Field("mqtt://localhost:1883", description="mqtt://host:port or mqtts://host:port (TLS)")
    username: str | None = Field(None, description="Broker user name")
    password: SecretStr | None = Field(None, description="Broker password (prefer PASSWORD_FILE)")
    password_file: Path | None = Field(None, description="File holding the password (Docker/systemd secret)")
    topic_prefix: str = Field("linewatch", description="First topic level: {prefix}/{camera_id}/…")
    client_id: str | None = Field(None, description="MQTT client id; default linewatch-{camera_id}")
    # An int range, not Literal[1, 2]: pydantic does not coerce the environment's "1" into a Literal int.
    qos: int = Field(1, ge=1, le=2, description="QoS of defect events; 1 or 2 (0 cannot be acknowledged)")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive; a dead link shows in 1.5x this")
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version")
    max_inflight: int = Field(20, ge=1, le=65535, description="Unacknowledged events on the wire at once")
    reconnect_min_s: float = Field(0.5, gt=0, le=60, description="First reconnect delay")
    reconnect_max_s: float = Field(10.0, gt=0, le=600, description="Reconnect delay cap")
    tls_ca_file: Path | None = Field(None, description="CA bundle for mqtts://; default: the system store")
    tls_cert_file: Path | None = Field(None, description="Client certificate for mutual TLS")
    tls_key_file: Path | None = Field(None, description="Client key for mutual TLS")
    tls_insecure: bool = Field(False, description="DANGER: skip certificate and hostname checks")

    @field_validator("url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        broker_address(value)
        return value

    @field_validator("password_file", "tls_ca_file", "tls_cert_file", "tls_key_file")
    @classmethod
    def _file_readable(cls, value: Path | None) -> Path | None:
        if value is not None:
            read_small_file(value)
        return value

    @field_validator("client_id")
    @classmethod
    def _client_id_is_a_topic_level(cls, value: str | None) -> str | None:
        if value is not None and not TOPIC_WORD.fullmatch(value):
            raise ValueError(f"{value!r} is not usable as a topic level (it names the availability topic); use "
                             "letters, digits, '_', '-', '.'")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_levels(cls, value: str) -> str:
        levels = value.split("/")
        if not value or any(not TOPIC_WORD.fullmatch(level) for level in levels):
            raise ValueError(f"{value!r} is not a topic prefix; use levels of letters, digits, '_-.' joined by '/'")
        return value

    def password_value(self) -> str | None:
        """The password, read from PASSWORD_FILE at call time so a rotated secret is picked up."""
        if self.password_file is not None:
            return read_small_file(self.password_file).decode("utf-8", "replace").rstrip("\r\n")
        return self.password.get_secret_value() if self.password else None


def broker_address(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) from mqtt://host[:port] or mqtts://host[:port]."""
    match = re.fullmatch(r"(mqtts?)://(\[[0-9a-fA-F:]+\]|[^:/\s]+)(?::(\d{1,5}))?/?", url)
    if not match:
        raise ValueError(f"{url!r} is not a broker URL; accepted: mqtt://host[:port] or mqtts://host[:port]")
    tls = match.group(1) == "mqtts"
    port = int(match.group(3) or (8883 if tls else 1883))
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range 1-65535")
    return match.group(2).strip("[]"), port, tls
