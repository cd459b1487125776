"""What the publisher does with an MQTT 5 PUBACK that refuses an event: retry it, or set it aside. Never delete it.

A broker answers a PUBLISH with a reason code; 0x80 and above is a failure. Most failures pass: 0x97 (quota
exceeded) is what EMQX and HiveMQ send when they rate-limit a client, 0x80 (unspecified) and 0x83
(implementation specific) come from a bridge or a plugin having a bad moment, 0x91 (packet identifier in use)
from a session mix-up. Those events are sent again after a backoff, and nothing new goes out meanwhile: the
broker asked for less. Four codes can never succeed on a retry (OASIS MQTT 5.0, 3.4.2.1): 0x87 not authorized,
0x90 topic name invalid, 0x95 packet too large, 0x99 payload format invalid. Those events move to the outbox's
dead letters (kept, bounded, counted, in /metrics and the status), where an operator can send them again once
the ACL or the limit is fixed (`linewatch dead-letters --requeue`).

0x95 (packet too large) is not a PUBACK code: a broker sends it in a DISCONNECT, and the client would send the
same packet again after every reconnect, blocking the queue for ever. The broker's CONNACK says how large a
packet it takes (Maximum Packet Size); an event too large for it is refused here, before it is sent, with 0x95.
"""

from __future__ import annotations

import contextlib
import time

from daemon.backoff import Backoff
from daemon.logs import get_logger
from daemon.metrics import Metrics
from daemon.outbox import Outbox, OutboxRetryableError, StoredEvent

log = get_logger("linewatch.mqtt")

PERMANENT = {0x87: "not authorized", 0x90: "topic name invalid", 0x95: "packet too large",
             0x99: "payload format invalid"}
# An event refused for now this many times in a row is refused for good: a broker plugin that turns down its
# content with 0x80 or 0x83 would otherwise hold the queue behind it for ever.
MAX_TRANSIENT_REFUSALS = 10
OUTPUT = "mqtt"


def code_label(code: int) -> str:
    return f"0x{code:02x}"


def publish_size(topic: str, payload: bytes) -> int:
    """Bytes of the MQTT 5 PUBLISH (QoS 1, no properties) that carries `payload` to `topic`."""
    body = 2 + len(topic.encode()) + 2 + 1 + len(payload)
    return 1 + max(1, (body.bit_length() + 6) // 7) + body


class Refusals:
    """The publisher's refused events: those to send again (in rowid order, after a backoff) and those to move
    to the dead letters. Used on the publisher's thread only (paho's callbacks run there too)."""

    def __init__(self, outbox: Outbox, metrics: Metrics, backoff: Backoff) -> None:
        self._outbox = outbox
        self._metrics = metrics
        self._backoff = backoff
        self._retry: list[int] = []  # rowids refused for now
        self._refusals: dict[int, int] = {}  # rowid -> refusals in a row, for those refused for now
        self._due = 0.0  # monotonic time before which nothing is sent
        self._dead: list[tuple[int, str, int, str, str]] = []  # (rowid, kind, code, reason, topic) refused for good
        self.dead_letters = 0  # in the outbox now: for the status

    def refused(self, rowid: int, kind: str, code: int, reason: str, topic: str = "") -> None:
        times = self._refusals.pop(rowid, 0) + 1
        if code in PERMANENT or times >= MAX_TRANSIENT_REFUSALS:
            self._dead.append((rowid, kind, code, reason if code in PERMANENT else
                               f"{reason} ({times} times in a row)", topic))
            return
        self._refusals[rowid] = times
        self._metrics.events_retried.labels(code_label(code)).inc()
        self._retry.append(rowid)
        now = time.monotonic()
        if now < self._due:  # the other events of the same burst: one backoff step per burst, not per event
            return
        delay = self._backoff.failed(reason)
        self._due = now + delay
        level = "warning" if self._backoff.attempts == 1 else "debug"  # one line per outage, not per burst
        getattr(log, level)("mqtt_publish_deferred", code=code_label(code), reason=reason, rowid=rowid, kind=kind,
                            retry_in_s=round(delay, 2), waiting=len(self._retry))

    def accepted(self, rowid: int) -> None:
        self._refusals.pop(rowid, None)
        if self._backoff.attempts:
            log.info("mqtt_publish_resumed", after_refusals=self._backoff.attempts)
            self._backoff.succeeded()

    @property
    def due_at(self) -> float | None:
        """When the events refused for now may be sent again (monotonic); None when there are none."""
        return self._due if self._retry else None

    @property
    def holding(self) -> bool:
        """True while the broker's last refusal's backoff runs: send nothing, old or new."""
        return bool(self._retry) and time.monotonic() < self._due

    def due(self, limit: int) -> list[StoredEvent]:
        """The refused events to send again now, oldest first (those the outbox dropped meanwhile are gone)."""
        if self.holding or not self._retry or limit <= 0:
            return []
        wanted = self._retry[:limit]
        found = self._outbox.get(wanted)
        gone = set(wanted) - {event.rowid for event in found}
        self._retry = [rowid for rowid in self._retry if rowid not in gone]
        for rowid in gone:  # dropped by a bound meanwhile
            self._refusals.pop(rowid, None)
        return found

    def sent(self, rowid: int) -> None:
        if rowid in self._retry:
            self._retry.remove(rowid)

    def bury(self) -> bool:
        """Move the events refused for good to the dead letters. True when there were any (the status changes)."""
        moved = False
        while self._dead:
            rowid, kind, code, reason, topic = self._dead[0]
            try:
                self._outbox.dead_letter(rowid, output=OUTPUT, code=code, reason=reason, address=topic)
            except OutboxRetryableError as exc:  # a full disk or a lock: the next pass tries again
                log.warning("outbox_dead_letter_failed", error=str(exc), rowid=rowid)
                return moved
            self._dead.pop(0)
            self._metrics.events_refused.labels(code_label(code)).inc()
            moved = True
            log.error("mqtt_publish_refused", code=code_label(code), reason=reason, rowid=rowid, kind=kind,
                      action="moved to the dead letters (linewatch dead-letters lists them; --requeue sends them "
                      "again once the cause is fixed)")
        if moved:
            self.count_dead_letters()
        return moved

    def count_dead_letters(self) -> None:
        with contextlib.suppress(OutboxRetryableError):  # the next change counts again
            self.dead_letters = self._outbox.stats().dead_letters
