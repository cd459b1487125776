"""The outbox's bounds and the records it hands out: stored events, drop reports, stats."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True)
class OutboxLimits:
    """Bounds on what the outbox keeps while the broker is unreachable.

    max_bytes counts payload bytes only; the file is larger (ids, topics, indexes, WAL), and it does not
    shrink: freed pages are reused. max_age_s is measured on the outbox's own clock (clock.py), which a
    wall-clock step does not move.
    max_events = 0: no count bound. max_file_bytes = 0: no ceiling; otherwise it caps the main database file
    (PRAGMA max_page_count) and appends beyond it raise OutboxFullError instead of filling the disk.
    """

    max_bytes: int
    max_age_s: float
    max_events: int = 0
    max_file_bytes: int = 0
    dead_letter_max_bytes: int = 16 * 1024 * 1024  # events an output refused for good (deadletter.py)
    # Byte bounds of the other kinds (e.g. {"snapshot": 64 MiB}): each kind is bounded by its own figure and
    # dropped before defect events when the disk fills, so pictures never evict defects. max_bytes and
    # max_events count defect events only.
    kind_max_bytes: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {self.max_bytes}")
        # > 0 so an event never ages out in the append that stores it.
        if self.max_age_s <= 0:
            raise ValueError(f"max_age_s must be > 0, got {self.max_age_s}")
        if self.max_events < 0 or self.max_file_bytes < 0:
            raise ValueError("max_events and max_file_bytes must be >= 0 (0 = no bound)")


@dataclass(frozen=True)
class StoredEvent:
    rowid: int
    camera_id: str
    seq: int
    event_id: str  # a snapshot's: `<snapshot id>/<view>`
    payload: bytes
    created_at: float  # unix time (wall clock) when appended
    kind: str = "defect"


class DropReason(str, Enum):
    MAX_AGE = "max_age"
    MAX_EVENTS = "max_events"
    MAX_BYTES = "max_bytes"
    DISK_FULL = "disk_full"  # the filesystem is full: the oldest events give way to the newest


@dataclass(frozen=True)
class DroppedRange:
    """One camera's share of a drop. Acked events in between are not counted, so `count` can be less than
    last_seq - first_seq + 1."""

    camera_id: str
    first_seq: int
    last_seq: int
    count: int


@dataclass(frozen=True)
class DropReport:
    reason: DropReason
    dropped: int
    dropped_bytes: int
    cameras: tuple[DroppedRange, ...]
    kind: str = "defect"  # seq ranges are per kind: only defect drops are gaps in the events' seq


@dataclass(frozen=True)
class OutboxStats:
    pending_events: int
    pending_bytes: int
    oldest_created_at: float | None
    oldest_age_s: float | None
    dropped_total: int  # persisted across restarts
    dropped_by_reason: Mapping[str, int] = field(default_factory=dict)
    disk_full: bool = False  # the filesystem filled up; bounded by what it holds until space comes back
    other_kinds: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # kind -> (rows, payload bytes)
    dead_letters: int = 0  # events an output refused for good, kept aside (deadletter.py)
    dead_letter_bytes: int = 0


@dataclass(frozen=True)
class DeadLetter:
    """An event an output refused for good, as `linewatch dead-letters` lists it."""

    rowid: int
    camera_id: str
    kind: str
    seq: int
    event_id: str
    address: str  # where the output refused it (MQTT: the topic)
    payload_bytes: int
    created_at: float
    dead_at: float
    output: str
    code: int
    reason: str
