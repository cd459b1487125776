"""The retained payloads the publisher sends besides events: the daemon's availability (and its last will) and
each camera's status. Their fields are in schemas/status.schema.json and docs/mqtt.md."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from daemon import __version__
from daemon.frames import CameraState, ModelInfo, rfc3339, utc_now
from daemon.redact import redact

DISK_FULL_REASON = "outbox disk full: the oldest stored events give way to the newest"


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True)
class StatusPayloads:
    client_id: str
    cameras: Iterable[str]
    model: ModelInfo
    fingerprint: Mapping[str, object] = field(default_factory=dict)

    def availability(self, *, online: bool, reason: str, with_time: bool = True) -> bytes:
        body: dict[str, Any] = {"state": "online" if online else "offline", "reason": reason,
                                "client_id": self.client_id, "cameras": sorted(self.cameras)}
        if with_time:
            body["at"] = rfc3339(utc_now())
        body["linewatch_version"] = __version__
        return _encode(body)

    def camera(self, camera_id: str, state: CameraState, reason: str, *, disk_full: bool, dead_letters: int) -> bytes:
        body: dict[str, Any] = {"state": state.value, "reason": redact(reason), "camera_id": camera_id,
                                "at": rfc3339(utc_now())}
        body["linewatch_version"] = __version__
        body["model"] = {"name": self.model.name, "sha256": self.model.sha256}
        body["degraded"] = [DISK_FULL_REASON] if disk_full else []
        if dead_letters:
            body["degraded"].append(f"{dead_letters} events refused by the broker for good, kept as dead letters "
                                    "(linewatch dead-letters)")
        body["dead_letters"] = dead_letters
        if self.fingerprint and state is not CameraState.OFFLINE:
            body["fingerprint"] = dict(self.fingerprint)
        return _encode(body)
