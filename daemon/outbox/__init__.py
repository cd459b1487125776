"""The durable outbox: the hand-off between the event stage and the outputs, on disk (SQLite, WAL).

Ground floor, beside `handoff.py`: it imports nothing from the stages above it.
"""

from daemon.outbox.deliveries import MQTT, OutputSpec
from daemon.outbox.errors import (
    OutboxCorruptError,
    OutboxError,
    OutboxFullError,
    OutboxRetryableError,
    PayloadTooLargeError,
)
from daemon.outbox.schema import DEFECT, SCHEMA_VERSION
from daemon.outbox.store import Outbox, SynchronousMode
from daemon.outbox.types import (
    DeadLetter,
    DroppedRange,
    DropReason,
    DropReport,
    OutboxLimits,
    OutboxStats,
    StoredEvent,
)

__all__ = [
    "DEFECT",
    "MQTT",
    "SCHEMA_VERSION",
    "DeadLetter",
    "DropReason",
    "DropReport",
    "DroppedRange",
    "Outbox",
    "OutboxCorruptError",
    "OutboxError",
    "OutboxFullError",
    "OutboxLimits",
    "OutboxRetryableError",
    "OutboxStats",
    "OutputSpec",
    "PayloadTooLargeError",
    "StoredEvent",
    "SynchronousMode",
]
