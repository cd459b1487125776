"""The MQTT section (LINEWATCH_MQTT__*): the broker, credentials, TLS files and the topic prefix."""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from daemon.files import read_secret
from daemon.payloads import CURRENT, Release
from daemon.redact import redact_url
from daemon.settings.base import Section, read_small_file
from daemon.settings.cameras import TOPIC_WORD


class MqttSettings(Section):
    url: str = Field("mqtt://localhost:1883", description="mqtt://host:port or mqtts://host:port (TLS)")
    username: str | None = Field(None, description="Broker user name")
    password: SecretStr | None = Field(None, max_length=4096, description="Broker password (prefer PASSWORD_FILE)")
    password_file: Path | None = Field(None, description="File holding the password (Docker/systemd secret)")
    topic_prefix: str = Field("linewatch", description="First topic level: {prefix}/{camera_id}/…")
    client_id: str | None = Field(None, description="MQTT client id; default linewatch-{camera_id}")
    # An int range, not Literal[1, 2]: pydantic does not coerce the environment's "1" into a Literal int.
    qos: int = Field(1, ge=1, le=2, description="QoS of defect events; 1 or 2 (0 cannot be acknowledged)")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive; a dead link shows in 1.5x this")
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version")
    max_inflight: int = Field(20, ge=1, le=65535, description="Unacknowledged events on the wire at once")
    ack_grace_s: float = Field(
        2.0, ge=0, le=600,
        description="Events stay in the outbox this long after the broker's PUBACK and are sent again after a crash "
        "or power cut within it: a broker on the same box saves its store just after acknowledging (mosquitto)")
    reconnect_min_s: float = Field(0.5, gt=0, le=60, description="First reconnect delay")
    reconnect_max_s: float = Field(10.0, gt=0, le=600, description="Reconnect delay cap")
    tls_ca_file: Path | None = Field(None, description="CA bundle for mqtts://; default: the system store")
    tls_cert_file: Path | None = Field(None, description="Client certificate for mutual TLS")
    tls_key_file: Path | None = Field(None, description="Client key for mutual TLS")
    tls_insecure: bool = Field(False, description="DANGER: skip certificate and hostname checks")
    payloads: Release = Field(
        CURRENT, description="Which release's payload formats to publish: 0.2 (this one) or 0.1 (the previous: "
        "linewatch.defect/2, defect/1, verdict/1, stats/1, status and availability without a schema), kept for this "
        "one release while subscribers migrate (docs/mqtt.md, Migrating from 0.1)")

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

    @field_validator("tls_ca_file")
    @classmethod
    def _ca_parses(cls, value: Path | None) -> Path | None:
        if value is not None:
            tls_context(value, None, None)
        return value

    @model_validator(mode="after")
    def _client_certificate_usable(self) -> MqttSettings:
        if self.tls_key_file is not None and self.tls_cert_file is None:
            raise ValueError("LINEWATCH_MQTT__TLS_KEY_FILE: set without LINEWATCH_MQTT__TLS_CERT_FILE, the "
                             "certificate it belongs to")
        if self.tls_cert_file is not None:
            tls_context(None, self.tls_cert_file, self.tls_key_file)
        return self

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
            return read_secret(self.password_file)
        return self.password.get_secret_value() if self.password else None


def broker_address(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) from mqtt://host[:port] or mqtts://host[:port]."""
    match = re.fullmatch(r"(mqtts?)://(\[[0-9a-fA-F:]+\]|[^:/\s]+)(?::(\d{1,5}))?/?", url)
    if not match:
        raise ValueError(f"{redact_url(url)!r} is not a broker URL; accepted: mqtt://host[:port] or "
                         "mqtts://host[:port] "
                         "(the user name and password have settings of their own)")
    tls = match.group(1) == "mqtts"
    port = int(match.group(3) or (8883 if tls else 1883))
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range 1-65535")
    return match.group(2).strip("[]"), port, tls


class TlsFilesError(ValueError):
    """A CA, certificate or key file OpenSSL refuses; the message names the variable (exit code 2)."""


def _openssl_words(exc: ssl.SSLError) -> str:
    return str(exc.reason).replace("_", " ").lower() if exc.reason else str(exc)


def _read(path: Path, variable: str) -> bytes:
    try:
        return read_small_file(path)
    except ValueError as exc:  # gone or replaced since the settings were checked
        raise TlsFilesError(f"{variable}: {exc}") from None


def tls_context(ca_file: Path | None, cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext:
    """The client TLS context for these files: TLS 1.2 or later, the broker's certificate and name checked
    (against `ca_file`, or the system store). TlsFilesError names the variable whose file cannot be used: not
    PEM, no certificate in it, a key that does not match its certificate, a key with a passphrase."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        text = _read(ca_file, "LINEWATCH_MQTT__TLS_CA_FILE").decode("ascii", "replace")  # PEM is ASCII
        try:
            context.load_verify_locations(cadata=text.replace("\ufffd", "?"))
        except (ssl.SSLError, ValueError) as exc:
            words = _openssl_words(exc) if isinstance(exc, ssl.SSLError) else str(exc)
            raise TlsFilesError(f"LINEWATCH_MQTT__TLS_CA_FILE: {str(ca_file)!r} holds no usable PEM certificate "
                                f"({words})") from None
    if cert_file is not None:
        variable = "LINEWATCH_MQTT__TLS_KEY_FILE" if key_file else "LINEWATCH_MQTT__TLS_CERT_FILE"
        key_text = _read(key_file or cert_file, variable).decode("utf-8", "replace")
        if "ENCRYPTED" in key_text:
            raise TlsFilesError(f"{variable}: the private key is protected by a passphrase, which linewatch cannot "
                                "be given; store it unencrypted with restrictive permissions (or as a credential)")
        try:
            # password: never let OpenSSL ask for one on the terminal (a service would hang on the prompt).
            context.load_cert_chain(str(cert_file), str(key_file) if key_file else None, password=lambda: b"")
        except (ssl.SSLError, OSError) as exc:
            words = _openssl_words(exc) if isinstance(exc, ssl.SSLError) else str(exc)
            if "mismatch" in words:
                raise TlsFilesError(f"LINEWATCH_MQTT__TLS_KEY_FILE: the key does not belong to the certificate in "
                                    f"LINEWATCH_MQTT__TLS_CERT_FILE ({words})") from None
            raise TlsFilesError(f"LINEWATCH_MQTT__TLS_CERT_FILE: {str(cert_file)!r} and its key are not a usable "
                                f"PEM certificate and private key ({words})") from None
    return context
