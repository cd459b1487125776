"""The MQTT topic layout, in one place, on the ground floor: the settings refuse a camera id that would collide
with it (DAEMON_LEVEL), the publisher and the stages address messages with it. Documented in docs/mqtt.md.

    {prefix}/{camera_id}/defects                       defect events (QoS 1/2, from the outbox)
    {prefix}/{camera_id}/verdicts                      one verdict per inspection job (QoS 1/2, from the outbox)
    {prefix}/{camera_id}/trigger                       commands: start an inspection job (subscribed)
    {prefix}/{camera_id}/status                        the camera's state (retained)
    {prefix}/{camera_id}/stats                         live figures (retained)
    {prefix}/{camera_id}/snapshots/{snapshot_id}/{view} JPEG pictures of defects (from the outbox)
    {prefix}/_daemon/{client_id}/availability          the process: online, or offline (the MQTT last will)
"""

from __future__ import annotations

DAEMON_LEVEL = "_daemon"  # the daemon-level branch; no camera may take this id


def defect_topic(prefix: str, camera_id: str) -> str:
    return f"{prefix}/{camera_id}/defects"


def verdict_topic(prefix: str, camera_id: str) -> str:
    return f"{prefix}/{camera_id}/verdicts"


def trigger_topic(prefix: str, camera_id: str) -> str:
    """Where an MQTT client starts a job: `{"part_id": "..."}` or an empty payload."""
    return f"{prefix}/{camera_id}/trigger"


def status_topic(prefix: str, camera_id: str) -> str:
    return f"{prefix}/{camera_id}/status"


def stats_topic(prefix: str, camera_id: str) -> str:
    return f"{prefix}/{camera_id}/stats"


def snapshot_topic(prefix: str, camera_id: str, snapshot_id: str, view: str) -> str:
    """`view` is `frame` (the whole frame with the boxes drawn) or `crop` (the defect and a margin)."""
    return f"{prefix}/{camera_id}/snapshots/{snapshot_id}/{view}"


def event_topic(prefix: str, kind: str, camera_id: str, event_id: str) -> str:
    """The topic of an outbox row: rows hold a kind and a payload, and this output (MQTT) maps kinds to topics."""
    if kind == "defect":
        return defect_topic(prefix, camera_id)
    if kind == "verdict":
        return verdict_topic(prefix, camera_id)
    if kind == "snapshot":  # event id: <snapshot id>/<view>
        snapshot_id, _, view = event_id.partition("/")
        return snapshot_topic(prefix, camera_id, snapshot_id, view or "frame")
    return f"{prefix}/{camera_id}/{kind}"


def availability_topic(prefix: str, client_id: str) -> str:
    """One per daemon process (one MQTT connection has one last will); per-camera status stays retained."""
    return f"{prefix}/{DAEMON_LEVEL}/{client_id}/availability"
