"""The outbox's SQLite schema: append-only migrations (user_version i -> i + 1). Append, never edit."""

from __future__ import annotations

# "LNWT": marks the file as ours, so a mistyped path to another app's database is refused, not altered.
APPLICATION_ID = 0x4C4E5754
# After a big drop transaction the WAL would otherwise stay at its high-water size.
JOURNAL_SIZE_LIMIT = 8 * 1024 * 1024

# SQLite's "now" as unix time, for migrations (they are static SQL).
_UNIX_NOW = "((julianday('now') - 2440587.5) * 86400.0)"

# MIGRATIONS[i] takes the schema from user_version i to i + 1. Append, never edit.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # AUTOINCREMENT so an id is never reused: a late or duplicate ack for a dropped row must not
        # delete a newer event, and the publisher's `after_rowid` cursor must never skip one.
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            camera_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            event_id TEXT NOT NULL,
            topic TEXT NOT NULL,
            payload BLOB NOT NULL,
            created_at REAL NOT NULL,
            UNIQUE (camera_id, seq))""",
        "CREATE INDEX events_created_at ON events (created_at)",
        # Not derived from `events`: rows there are deleted on ack and drop, and seq must never go back.
        "CREATE TABLE seq_counters (camera_id TEXT PRIMARY KEY, last_seq INTEGER NOT NULL) WITHOUT ROWID",
        "CREATE TABLE drop_counters (reason TEXT PRIMARY KEY, total INTEGER NOT NULL) WITHOUT ROWID",
        # Running totals kept by triggers inside each transaction: the byte bound costs O(1) per append
        # and stays right after a crash.
        """CREATE TABLE totals (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            events INTEGER NOT NULL, bytes INTEGER NOT NULL)""",
        "INSERT INTO totals VALUES (1, 0, 0)",
        """CREATE TRIGGER events_after_insert AFTER INSERT ON events BEGIN
            UPDATE totals SET events = events + 1, bytes = bytes + length(NEW.payload);
        END""",
        """CREATE TRIGGER events_after_delete AFTER DELETE ON events BEGIN
            UPDATE totals SET events = events - 1, bytes = bytes - length(OLD.payload);
        END""",
        f"PRAGMA application_id = {APPLICATION_ID}",
    ),
    (
        # v2: a `kind` per row (defect, snapshot, ...), each kind with its own seq and its own byte bound. SQLite
        # cannot change a UNIQUE constraint in place, so the table is rebuilt; AUTOINCREMENT's high-water mark is
        # carried over first, so no id is ever reused across the migration.
        """CREATE TABLE events_v2 (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            camera_id TEXT NOT NULL,
            kind TEXT NOT NULL DEFAULT 'defect',
            seq INTEGER NOT NULL,
            event_id TEXT NOT NULL,
            topic TEXT NOT NULL,
            payload BLOB NOT NULL,
            created_at REAL NOT NULL,
            UNIQUE (camera_id, kind, seq))""",
        "INSERT INTO sqlite_sequence (name, seq) SELECT 'events_v2', seq FROM sqlite_sequence WHERE name = 'events'",
        """INSERT INTO events_v2 (id, camera_id, kind, seq, event_id, topic, payload, created_at)
            SELECT id, camera_id, 'defect', seq, event_id, topic, payload, created_at FROM events""",
        "DROP TRIGGER events_after_insert",
        "DROP TRIGGER events_after_delete",
        "DROP TABLE events",
        "ALTER TABLE events_v2 RENAME TO events",
        "CREATE INDEX events_created_at ON events (created_at)",
        "CREATE INDEX events_kind ON events (kind, id)",
        """CREATE TABLE kind_totals (
            kind TEXT PRIMARY KEY, events INTEGER NOT NULL, bytes INTEGER NOT NULL) WITHOUT ROWID""",
        "INSERT INTO kind_totals SELECT 'defect', events, bytes FROM totals WHERE events > 0",
        """CREATE TRIGGER events_after_insert AFTER INSERT ON events BEGIN
            UPDATE totals SET events = events + 1, bytes = bytes + length(NEW.payload);
            INSERT INTO kind_totals (kind, events, bytes) VALUES (NEW.kind, 1, length(NEW.payload))
                ON CONFLICT (kind) DO UPDATE SET events = events + 1, bytes = bytes + excluded.bytes;
        END""",
        """CREATE TRIGGER events_after_delete AFTER DELETE ON events BEGIN
            UPDATE totals SET events = events - 1, bytes = bytes - length(OLD.payload);
            UPDATE kind_totals SET events = events - 1, bytes = bytes - length(OLD.payload) WHERE kind = OLD.kind;
        END""",
    ),
    (
        # v3: ages that survive a wall-clock step. `created_clock` is the outbox's own clock (clock.py): it runs
        # with the monotonic clock within a run and carries on across restarts, so an NTP step on a board without
        # an RTC ages nothing out. Rows from before keep their age: their clock is their wall-clock age before now.
        "ALTER TABLE events ADD COLUMN created_clock REAL NOT NULL DEFAULT 0",
        f"UPDATE events SET created_clock = created_at - {_UNIX_NOW}",
        """CREATE TABLE clock (
            id INTEGER PRIMARY KEY CHECK (id = 1), elapsed REAL NOT NULL, wall REAL NOT NULL,
            boot_id TEXT NOT NULL DEFAULT '', monotonic REAL NOT NULL DEFAULT 0)""",
        f"INSERT INTO clock (id, elapsed, wall) VALUES (1, 0, {_UNIX_NOW})",
        # When the broker acknowledged the event (outbox clock); the row goes LINEWATCH_MQTT__ACK_GRACE_S later, and
        # after a crash within that time it is sent again (store.py). Few rows carry one: a partial index.
        "ALTER TABLE events ADD COLUMN acked_clock REAL",
        "CREATE INDEX events_acked ON events (kind, acked_clock) WHERE acked_clock IS NOT NULL",
        # Rows are in clock order, so the oldest of a kind is found through (kind, id); this index only cost writes.
        "DROP INDEX events_created_at",
        # Events an output refused for good (MQTT 5: not authorised, topic name invalid, packet too large, payload
        # format invalid): moved here, not deleted; bounded; never re-sent on their own. `id` is the event's own.
        """CREATE TABLE dead_letters (
            id INTEGER PRIMARY KEY,
            camera_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            seq INTEGER NOT NULL,
            event_id TEXT NOT NULL,
            topic TEXT NOT NULL,
            payload BLOB NOT NULL,
            created_at REAL NOT NULL,
            dead_at REAL NOT NULL,
            output TEXT NOT NULL,
            code INTEGER NOT NULL,
            reason TEXT NOT NULL)""",
        """CREATE TABLE dead_totals (
            id INTEGER PRIMARY KEY CHECK (id = 1), events INTEGER NOT NULL, bytes INTEGER NOT NULL)""",
        "INSERT INTO dead_totals VALUES (1, 0, 0)",
        """CREATE TRIGGER dead_after_insert AFTER INSERT ON dead_letters BEGIN
            UPDATE dead_totals SET events = events + 1, bytes = bytes + length(NEW.payload);
        END""",
        """CREATE TRIGGER dead_after_delete AFTER DELETE ON dead_letters BEGIN
            UPDATE dead_totals SET events = events - 1, bytes = bytes - length(OLD.payload);
        END""",
    ),
    (
        # v4: outputs with their own place. Each output (MQTT, a PLC, ...) takes some kinds; a row waits in
        # `deliveries` once per output that takes its kind, and an output's ack removes its own mark only. A row is
        # delivered when its last mark goes (then its ack grace runs, store.py). Until v3 MQTT was the only output:
        # every row it had not acknowledged waits for it.
        "CREATE TABLE outputs (name TEXT PRIMARY KEY, kinds TEXT NOT NULL) WITHOUT ROWID",
        "INSERT INTO outputs VALUES ('mqtt', '*')",
        "CREATE TABLE deliveries (id INTEGER NOT NULL, output TEXT NOT NULL, PRIMARY KEY (id, output)) WITHOUT ROWID",
        "CREATE INDEX deliveries_output ON deliveries (output, id)",
        "INSERT INTO deliveries SELECT id, 'mqtt' FROM events WHERE acked_clock IS NULL",
        # A row that goes (dropped by a bound, purged, dead-lettered) takes its marks with it.
        """CREATE TRIGGER events_after_delete_deliveries AFTER DELETE ON events BEGIN
            DELETE FROM deliveries WHERE id = OLD.id;
        END""",
        # Rows hold a kind and a payload; each output maps kinds to its own addresses (MQTT: daemon/topics.py), so
        # `topic` is no longer written (SQLite before 3.35, a Jetson's, cannot drop a column). A picture's view was in
        # its topic only: it joins its event id (`<snapshot id>/<view>`), from which the topic is made again.
        """UPDATE events SET event_id = event_id || CASE WHEN topic LIKE '%/crop' THEN '/crop' ELSE '/frame' END
            WHERE kind = 'snapshot' AND instr(event_id, '/') = 0""",
        """UPDATE dead_letters SET event_id = event_id || CASE WHEN topic LIKE '%/crop' THEN '/crop' ELSE '/frame' END
            WHERE kind = 'snapshot' AND instr(event_id, '/') = 0""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

EVENT_COLUMNS = "id, camera_id, seq, event_id, payload, created_at, kind"

DEFECT = "defect"  # the kind of a defect event; other kinds (snapshots) have their own bounds and seq
EVERY_KIND = "*"  # an output that takes every kind (outputs.kinds)
