"""Outputs with their own place in the outbox (schema v4).

An output (MQTT, a PLC, ...) takes some kinds of row. When a row is stored it waits once per output that takes its
kind (a mark in `deliveries`); an output reads the rows that still wait for it, in order, and its ack removes its own
mark only. A row is delivered when its last mark goes: then its ack grace runs (store.py) and it is deleted. So a
slow or disconnected output keeps the rows it has not had, and no output ever sees a row twice because another
output acknowledged it.

The set of outputs comes from the daemon's settings at each start (`register`). An output added later takes the rows
stored from then on; an output no longer configured gives up its marks, and rows that waited for it alone count as
delivered.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from daemon.outbox.schema import EVERY_KIND

log = logging.getLogger("daemon.outbox")

MQTT = "mqtt"  # the output every outbox had until schema v4


@dataclass(frozen=True)
class OutputSpec:
    """An output's name and the kinds it takes (None: every kind)."""

    name: str
    kinds: frozenset[str] | None = None
    # An at-least-once output (MQTT) is given again, after a restart, the rows it acked within their ack grace: a
    # broker saves after it acknowledges, and a power cut takes both. A live output (the PLC's) is not.
    resend_in_grace: bool = True

    def takes(self, kind: str) -> bool:
        return self.kinds is None or kind in self.kinds

    @property
    def column(self) -> str:
        """`outputs.kinds`: '*' or the kinds, comma-separated and sorted."""
        return EVERY_KIND if self.kinds is None else ",".join(sorted(self.kinds))


def register(conn: sqlite3.Connection, outputs: Iterable[OutputSpec]) -> None:
    """Make the outputs table these outputs (in the caller's transaction). Marks of outputs no longer configured go,
    and so do the rows that waited for those alone (the others had them: no ack grace to wait out)."""
    wanted = {spec.name: spec for spec in outputs}
    if not wanted:
        raise ValueError("an outbox needs at least one output")
    known = {str(name): str(kinds) for name, kinds in conn.execute("SELECT name, kinds FROM outputs")}
    for spec in wanted.values():
        if not spec.name or "," in spec.name or (spec.kinds is not None and not spec.kinds):
            raise ValueError(f"bad output {spec!r}: a name, and None or some kinds")
        if known.get(spec.name) != spec.column:  # written only when it changed: a full disk still opens
            conn.execute("INSERT INTO outputs (name, kinds) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET kinds = "
                         "excluded.kinds", (spec.name, spec.column))
    gone = [name for name in known if name not in wanted]
    for name in gone:
        released = conn.execute("DELETE FROM deliveries WHERE output = ?", (name,)).rowcount
        conn.execute("DELETE FROM outputs WHERE name = ?", (name,))
        log.warning("outbox_output_removed", extra={"output": name, "released": released})
    if gone:  # rare (a configuration change): one pass over the waiting rows
        conn.execute("DELETE FROM events WHERE acked_clock IS NULL AND NOT EXISTS "
                     "(SELECT 1 FROM deliveries d WHERE d.id = events.id)")


def mark(conn: sqlite3.Connection, rowid: int, outputs: Iterable[OutputSpec], kind: str) -> int:
    """Make a new row wait for every output that takes its kind; how many do."""
    names = [(rowid, spec.name) for spec in outputs if spec.takes(kind)]
    conn.executemany("INSERT INTO deliveries (id, output) VALUES (?, ?)", names)
    return len(names)


def waiting(conn: sqlite3.Connection, spec: OutputSpec, after_rowid: int, limit: int) -> list[int]:
    """The next `limit` rowids above after_rowid that wait for this output, oldest first; with `resend_in_grace`, also
    the delivered rows of its kinds still in their ack grace (after a restart its cursor starts below them)."""
    query = "SELECT id FROM deliveries WHERE output = ? AND id > ?"
    params: list[object] = [spec.name, after_rowid]
    if spec.resend_in_grace:
        kinds = sorted(spec.kinds or ())
        query += " UNION SELECT id FROM events WHERE acked_clock IS NOT NULL AND id > ?" + (
            f" AND kind IN ({','.join('?' * len(kinds))})" if kinds else "")
        params += [after_rowid, *kinds]
    return [int(rowid) for (rowid,) in conn.execute(f"{query} ORDER BY id LIMIT ?", [*params, limit])]


def unmark(conn: sqlite3.Connection, output: str, rowids: Iterable[int]) -> tuple[int, list[int]]:
    """Remove this output's marks from these rows: (how many it still had, those rows that now wait for nobody)."""
    done = [rowid for rowid in rowids
            if conn.execute("DELETE FROM deliveries WHERE id = ? AND output = ?", (rowid, output)).rowcount]
    return len(done), [rowid for rowid in done if conn.execute("SELECT 1 FROM deliveries WHERE id = ? LIMIT 1",
                                                               (rowid,)).fetchone() is None]


def waiting_counts(conn: sqlite3.Connection) -> Mapping[str, int]:
    """output -> rows waiting for it (a count over the marks: for stats at a human's pace, not per event)."""
    counts = {str(name): 0 for (name,) in conn.execute("SELECT name FROM outputs")}
    counts.update({str(name): int(n) for name, n in conn.execute(
        "SELECT output, count(*) FROM deliveries GROUP BY output")})
    return counts


def spec_of(outputs: Iterable[OutputSpec], name: str) -> OutputSpec:
    for spec in outputs:
        if spec.name == name:
            return spec
    raise ValueError(f"no output {name!r} in this outbox")


def delivered(conn: sqlite3.Connection, grace_s: float, rowids: list[int], clock: float) -> None:
    """Rows no output waits for any more. With an ack grace each is marked, not deleted: it leaves the queue's figures
    and bounds at once, and the row goes `grace_s` later (store.py). A crash before that gives it again to the outputs
    that `resend_in_grace`: a broker saves after it acknowledges, and a power cut takes both. Without a grace it goes
    now."""
    if grace_s <= 0:
        conn.executemany("DELETE FROM events WHERE id = ?", [(rowid,) for rowid in rowids])
    else:
        conn.executemany("UPDATE events SET acked_clock = ? WHERE id = ? AND acked_clock IS NULL",
                         [(clock, rowid) for rowid in rowids])
