"""Helpers for the camera resilience tests: reading the daemon's retries, status and events back.

Everything here observes real things (the daemon's JSON log, MQTT messages, /proc); nothing stands in for
the daemon or the camera.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from typing import Any

from tests.support.procs import DaemonProcess, LogRecord
from tests.support.subscriber import Message


def has_defect(messages: list[Message]) -> bool:
    return any(m.topic.endswith("/defects") for m in messages)


def status_states(messages: list[Message]) -> list[str]:
    """The `state` of each status message in `messages`, consecutive repeats folded (a new reason, same state)."""
    states: list[str] = []
    for message in (m for m in messages if m.topic.endswith("/status")):
        state = message.json()["state"]
        if not states or states[-1] != state:
            states.append(state)
    return states


def first_defect_after(messages: list[Message], since_mono: float) -> Message | None:
    """The first defect found after `since_mono` (time.monotonic) that reached the subscriber: a `new` event
    (an `end` then may close a defect seen before an outage: its best view is older)."""
    return next((m for m in messages if m.topic.endswith("/defects") and m.arrived > since_mono
                 and m.json().get("type", "new") == "new"), None)


def retries(daemon: DaemonProcess, since: int = 0) -> list[LogRecord]:
    """`camera_retry` records (debug level: one per failed open/read) from log index `since` on."""
    return [r for r in daemon.logs[since:] if r.get("event") == "camera_retry"]


def wait_for_attempt(daemon: DaemonProcess, attempts: int, timeout: float, since: int = 0) -> LogRecord:
    """Wait for the `camera_retry` record of failure number `attempts` (or later) of the current outage."""
    return daemon.wait_for_log(
        lambda r: r.get("event") == "camera_retry" and r.get("attempts", 0) >= attempts, timeout, since
    )


def log_time(record: LogRecord) -> dt.datetime:
    """The record's `ts` (structlog ISO 8601, UTC) as an aware datetime."""
    return dt.datetime.fromisoformat(str(record["ts"]).replace("Z", "+00:00"))


def open_durations(records: list[LogRecord]) -> list[float]:
    """Seconds each open attempt took, from consecutive `camera_retry` records.

    Between two records the capture thread waited `delay_s` (the backoff) and then ran one open, so the
    open took (ts[n+1] - ts[n]) - delay_s[n], plus a few milliseconds of logging.
    """
    return [
        (log_time(later) - log_time(earlier)).total_seconds() - float(earlier["delay_s"])
        for earlier, later in itertools.pairwise(records)
    ]


def keep_outage_until(daemon: DaemonProcess, deadline: float) -> None:
    """Let an outage the issue prescribes last until `deadline` (time.monotonic), failing if the daemon exits.

    This is the length of the scenario, not a synchronisation: it waits on the daemon's exit with the
    deadline as timeout, so a daemon that dies during the outage fails the test at once.
    """
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return
    try:
        code = daemon.wait(remaining)
    except AssertionError:  # still running at the deadline: what we want
        return
    raise AssertionError(f"the daemon exited with {code} during the camera outage\n{daemon.describe()}")


def crash_records(daemon: DaemonProcess) -> list[dict[str, Any]]:
    """Records that mean a bug or a fatal camera error; a resilience test wants none."""
    bad = {"capture_crashed", "camera_fatal", "daemon_crashed", "stages_did_not_stop", "capture_stalled",
           "publisher_crashed"}
    return [r for r in daemon.logs if r.get("event") in bad or r.get("level") in ("critical", "exception")]
