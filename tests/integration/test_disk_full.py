"""A full disk under the outbox, with the broker down (issue 8): inspection goes on, the oldest events give way
to the newest (each drop logged and a gap in seq), /readyz says why, and once a broker is back every event
still stored is delivered. The disk is a real tmpfs that another file has mostly filled (root is needed to
mount it; CI and the sessions run as root)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.exitcodes import ExitCode
from tests.integration.ops_helpers import wait_probe
from tests.support.disk import small_tmpfs
from tests.support.mosquitto import Mosquitto
from tests.support.net import free_port
from tests.support.procs import DaemonProcess
from tests.support.subscriber import Subscriber

pytestmark = pytest.mark.integration


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", "1m", filler_kib=600) as mount:
        yield mount


def test_a_full_disk_keeps_inspection_going_drops_the_oldest_and_says_why(
    full_disk: Path, mosquitto_factory: Callable[..., Mosquitto], subscriber_factory: Callable[..., Subscriber],
    daemon_factory: Callable[..., DaemonProcess], daemon_env: Callable[..., dict[str, str]],
) -> None:
    broker = Mosquitto(workdir=full_disk.parent / "mosquitto")  # its port is known now; it starts later
    port = free_port()
    # frames mode: an event per frame with defects fills the disk in seconds (defects mode writes far less)
    env = daemon_env("synthetic://line?fps=15&defect_rate=1", broker.url, LINEWATCH_OUTBOX__DIR=str(full_disk),
                     LINEWATCH_EVENTS__MODE="frames",
                     LINEWATCH_OUTBOX__RESERVE_MB="0.09", LINEWATCH_HTTP__PORT=str(port),
                     LINEWATCH_HTTP__HOST="127.0.0.1", LINEWATCH_MQTT__RECONNECT_MAX_S="1")
    daemon = daemon_factory(env)
    # When the disk fills with the broker down
    ready = wait_probe(port, "/readyz", lambda code, body: not body.get("outbox_accepting", True), 180)
    assert "broker not connected and the outbox is not accepting (disk full)" in ready["reasons"], ready
    drop = daemon.wait_for_event("outbox_dropped", 60, reason="disk_full")
    assert drop["cameras"]["synthetic-line"][0] >= 1
    # Then inspection goes on: the live hand-off drops frames only as it would anyway, events keep committing
    committed = daemon.wait_for_event("defect_event", 10, since=daemon.logs.index(drop))["seq"]
    later = daemon.wait_for_log(lambda r: r.get("event") == "defect_event" and r["seq"] >= committed + 20, 60)
    assert later["seq"] >= committed + 20
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == ExitCode.OK, daemon.describe()
    summary = daemon.wait_for_event("shutdown_complete", 1)
    assert summary["lost"] == 0, "nothing is lost without a trace: drops are reported, not lost"
    assert summary["frames_inspected"] >= 0.8 * summary["frames_read"], summary
    dropped = {seq for r in daemon.logs if r.get("event") == "outbox_dropped" and r.get("reason") == "disk_full"
               for seq in range(r["cameras"]["synthetic-line"][0], r["cameras"]["synthetic-line"][1] + 1)}
    # When a broker comes back and the daemon restarts on the same outbox
    broker.start()
    try:
        sub = subscriber_factory(broker.host, broker.port, ["linewatch/+/defects"])
        again = daemon_factory({**env, "LINEWATCH_CAMERA__URL": "synthetic://line?frames=1&realtime=false"})
        assert again.wait(120) == ExitCode.OK, again.describe()
        last = summary["events"] + again.wait_for_event("shutdown_complete", 1)["events"]
        # the restarted daemon left once the broker had acknowledged everything it stored; the subscriber may
        # hear the last ones a moment after the acknowledgement
        expected = last - len(dropped)
        messages = sub.wait_for(lambda ms: len({m.json()["seq"] for m in ms}) >= expected, 10)
        delivered = {m.json()["seq"] for m in messages}
        # Then every seq up to the last is either delivered or was reported dropped: the gaps are the drops
        assert delivered | dropped == set(range(1, last + 1))
        assert not delivered & dropped, "a dropped event was delivered"
    finally:
        broker.close()
