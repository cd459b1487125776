"""The PLC outputs' settings (LINEWATCH_MODBUS__*, LINEWATCH_OPCUA__*): models only."""

from __future__ import annotations

from pydantic import Field, field_validator

from daemon.settings_base import Section
from daemon.settings_sections import resolve_bind_address


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
