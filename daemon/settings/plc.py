"""The PLC outputs' settings (LINEWATCH_MODBUS__*, LINEWATCH_OPCUA__*): models only."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from daemon.settings.base import Section, read_small_file
from daemon.settings.sections import resolve_bind_address


class ModbusSettings(Section):
    enabled: bool = Field(False, description="Serve the verdicts to a PLC over Modbus TCP (needs "
                          "LINEWATCH_JOBS__ENABLED)")
    host: str = Field("0.0.0.0", max_length=253, description="Bind address of the Modbus TCP server")
    port: int = Field(5020, ge=1, le=65535, description="Port (502 is Modbus' own, but needs root or "
                      "CAP_NET_BIND_SERVICE)")
    fresh_ms: float = Field(2000.0, ge=10, le=600_000, description="A verdict older than this is never presented to "
                            "the PLC (it still goes to MQTT)")
    buffer: int = Field(8, ge=1, le=64, description="Results waiting for the PLC's acknowledgement, per camera; "
                        "beyond it a result is lost to the PLC (RESULT_OVERRUN)")

    @field_validator("host")
    @classmethod
    def _host_resolves(cls, value: str) -> str:
        if value:
            resolve_bind_address(value, 5020)
        return value


class OpcUaSettings(Section):
    enabled: bool = Field(False, description="Serve the verdicts to a PLC over OPC UA, Machine Vision model "
                          "(needs LINEWATCH_JOBS__ENABLED)")
    endpoint: str = Field("opc.tcp://0.0.0.0:4840/linewatch/", max_length=300, description="The endpoint URL")
    certificate_file: Path | None = Field(None, description="The server's certificate (DER or PEM)")
    private_key_file: Path | None = Field(None, description="The server's private key (PEM)")
    security: Literal["none", "sign", "sign_and_encrypt"] = Field(
        "none", description="Security mode, policy Basic256Sha256; sign and sign_and_encrypt need a certificate")
    username: str | None = Field(None, max_length=128, description="The one user a PLC logs in as")
    password_file: Path | None = Field(None, description="File holding that user's password")
    anonymous: bool | None = Field(None, description="Allow anonymous sessions; default: only while neither USERNAME "
                                   "nor CERTIFICATE_FILE is set")

    @field_validator("endpoint")
    @classmethod
    def _endpoint_form(cls, value: str) -> str:
        parts = urlsplit(value)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme != "opc.tcp" or not parts.hostname or port is None:
            raise ValueError("give opc.tcp://<host>:<port>/<path>, e.g. opc.tcp://0.0.0.0:4840/linewatch/")
        resolve_bind_address(parts.hostname, port)
        return value

    @field_validator("certificate_file", "private_key_file", "password_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None:
            read_small_file(value)
        return value

    @field_validator("security")
    @classmethod
    def _signing_needs_a_certificate(cls, value: str, info: ValidationInfo) -> str:
        if value != "none" and not (info.data.get("certificate_file") and info.data.get("private_key_file")):
            raise ValueError("signing needs the server's certificate: set LINEWATCH_OPCUA__CERTIFICATE_FILE and "
                             "LINEWATCH_OPCUA__PRIVATE_KEY_FILE")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaSettings:
        if (self.username is None) != (self.password_file is None):
            raise ValueError("LINEWATCH_OPCUA__USERNAME and LINEWATCH_OPCUA__PASSWORD_FILE go together")
        if not self.allows_anonymous and self.username is None:
            raise ValueError("LINEWATCH_OPCUA__ANONYMOUS: anonymous sessions are off (they are once a certificate is "
                             "set) and no LINEWATCH_OPCUA__USERNAME is set: nobody could log in; set a user, or "
                             "ANONYMOUS=true")
        return self

    @property
    def allows_anonymous(self) -> bool:
        """Anonymous sessions: as asked, else only while neither a user nor a certificate is configured."""
        if self.anonymous is not None:
            return self.anonymous
        return self.username is None and self.certificate_file is None
