"""The JSON payloads' names and versions, and the one encoder every JSON payload goes through.

linewatch 0.2 gave the payloads consistent, machine-readable names (docs/mqtt.md, "Migrating from 0.1"):
- every enum value is snake_case (`end_reason: end_of_stream`, availability `reason: connection_lost`,
  status `degraded: ["outbox_disk_full"]`);
- every time is named `<moment>_at`: an event's `committed_at` (0.1 called it `published_at`, but it is the commit
  to the outbox, rendered once so a re-delivery is byte-identical); the live messages' `published_at` (0.1: `at`),
  the moment the MQTT thread hands them to the broker;
- one percentile set, p50/p95/p99 (0.1's stats had p50/p95 for inference, p50/p99 for frame age);
- full-length hashes (0.1's status fingerprint cut the model's SHA-256 to 16 hex digits);
- every JSON payload names its schema and version (0.1's status and availability named none).

`LINEWATCH_MQTT__PAYLOADS=0.1` publishes 0.1's formats for this one release, while subscribers migrate. A payload
is always rendered in the current form and `encode` turns it into the previous one, so the two differ in the
renames below and nothing else.
"""

from __future__ import annotations

import json
from typing import Any, Literal

Release = Literal["0.2", "0.1"]
CURRENT: Release = "0.2"
PREVIOUS: Release = "0.1"

DEFECT = "linewatch.defect/3"  # one message per physical defect: new, end
FRAME_DEFECTS = "linewatch.frame_defects/1"  # frames mode: one per inspected frame with detections
VERDICT = "linewatch.verdict/2"
STATS = "linewatch.stats/2"
STATUS = "linewatch.status/2"
AVAILABILITY = "linewatch.availability/2"

# the schema each message had in 0.1 (None: it named none). Frames mode's message was linewatch.defect/1; its
# successor takes a name of its own, since defect/2 and /3 are the per-defect message's.
PREVIOUS_SCHEMA: dict[str, str | None] = {
    DEFECT: "linewatch.defect/2", FRAME_DEFECTS: "linewatch.defect/1", VERDICT: "linewatch.verdict/1",
    STATS: "linewatch.stats/1", STATUS: None, AVAILABILITY: None,
}
# status `degraded` codes, and the last will's availability reason
OUTBOX_DISK_FULL, DEAD_LETTERS, CONNECTION_LOST = "outbox_disk_full", "dead_letters", "connection_lost"
_PREVIOUS_WORDS = {"end_of_stream": "end of stream", "resolution_change": "resolution change",
                   CONNECTION_LOST: "connection lost (last will)"}
DISK_FULL_TEXT = "outbox disk full: the oldest stored events give way to the newest"


def encode(body: dict[str, Any], release: Release = CURRENT) -> bytes:
    """Compact JSON of a current payload, or of its 0.1 form."""
    return json.dumps(previous(body) if release == PREVIOUS else body, separators=(",", ":")).encode()


def _renamed(body: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """`body` with the key `old` called `new`, in its place."""
    return {new if key == old else key: value for key, value in body.items()}


def previous(body: dict[str, Any]) -> dict[str, Any]:
    """A current payload as linewatch 0.1 published it."""
    schema = body["schema"]
    if schema not in PREVIOUS_SCHEMA:
        raise ValueError(f"no previous form for {schema!r}")
    if schema in (DEFECT, FRAME_DEFECTS, VERDICT):
        body = _renamed(body, "committed_at", "published_at")
    else:
        body = _renamed(body, "published_at", "at")
    if schema == DEFECT and body["end_reason"] is not None:
        body["end_reason"] = _PREVIOUS_WORDS.get(body["end_reason"], body["end_reason"])
    elif schema == STATS:
        body["inference_ms"] = {k: v for k, v in body["inference_ms"].items() if k != "p99"}
        body["frame_age_ms"] = {k: v for k, v in body["frame_age_ms"].items() if k != "p95"}
    elif schema == STATUS:
        body["degraded"] = [DISK_FULL_TEXT if code == OUTBOX_DISK_FULL else
                            f"{body['dead_letters']} events refused by the broker for good, kept as dead letters "
                            "(linewatch dead-letters)" for code in body["degraded"]]
        if "fingerprint" in body:
            body["fingerprint"] = {**body["fingerprint"], "model_sha256": body["fingerprint"]["model_sha256"][:16]}
    elif schema == AVAILABILITY:
        body["reason"] = _PREVIOUS_WORDS.get(body["reason"], body["reason"])
    if (old := PREVIOUS_SCHEMA[schema]) is None:
        return {key: value for key, value in body.items() if key != "schema"}
    return {**body, "schema": old}
