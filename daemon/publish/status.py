"""The retained payloads the publisher sends besides events: the daemon's availability (and its last will) and
each camera's status (`linewatch.availability/2`, `linewatch.status/2`). Their fields are in `schemas/` and
docs/mqtt.md; daemon/payloads.py renders them as linewatch 0.1 did where LINEWATCH_MQTT__PAYLOADS says so."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from daemon import __version__
from daemon.frames import CameraState, ModelInfo, rfc3339, utc_now
from daemon.payloads import (
    AVAILABILITY,
    CURRENT,
    DEAD_LETTERS,
    OUTBOX_DISK_FULL,
    STATUS,
    Release,
    encode,
)
from daemon.redact import redact

RUNNING, SHUTDOWN = "running", "shutdown"  # availability reasons besides the last will's CONNECTION_LOST


@dataclass(frozen=True)
class StatusPayloads:
    client_id: str
    cameras: Iterable[str]
    model: ModelInfo
    fingerprint: Mapping[str, object] = field(default_factory=dict)
    release: Release = CURRENT

    def availability(self, *, online: bool, reason: str, with_time: bool = True) -> bytes:
        """`with_time=False` for the last will: the broker sends it whenever the link dies, so no time is true."""
        body: dict[str, Any] = {"schema": AVAILABILITY, "state": "online" if online else "offline", "reason": reason,
                                "client_id": self.client_id, "cameras": sorted(self.cameras)}
        if with_time:
            body["published_at"] = rfc3339(utc_now())
        body["linewatch_version"] = __version__
        return encode(body, self.release)

    def camera(self, camera_id: str, state: CameraState, reason: str, *, disk_full: bool, dead_letters: int) -> bytes:
        body: dict[str, Any] = {"schema": STATUS, "state": state.value, "reason": redact(reason),
                                "camera_id": camera_id, "published_at": rfc3339(utc_now()),
                                "linewatch_version": __version__,
                                "model": {"name": self.model.name, "sha256": self.model.sha256},
                                "degraded": [code for code, on in ((OUTBOX_DISK_FULL, disk_full),
                                                                   (DEAD_LETTERS, dead_letters > 0)) if on],
                                "dead_letters": dead_letters}
        if self.fingerprint and state is not CameraState.OFFLINE:
            body["fingerprint"] = dict(self.fingerprint)
        return encode(body, self.release)
