"""pytest fixtures over the harness; enable with ``pytest_plugins = ["tests.support.fixtures"]``.

Factories rather than single instances, because failure tests often need two
brokers, or a broker plus a hostile server, and each must be torn down even
when the test fails halfway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.genicam import FakeCamera, fake_camera_missing
from tests.support.hostile import BlackHole, GarbageServer
from tests.support.mosquitto import Mosquitto, mosquitto_missing
from tests.support.procs import DaemonProcess
from tests.support.rtsp import RtspServer, rtsp_missing
from tests.support.subscriber import Subscriber

if TYPE_CHECKING:
    from tests.support.tls import Pki


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A fresh :class:`tests.support.tls.Pki` in ``tmp_path/pki``."""
    from tests.support.tls import make_pki  # cryptography is only needed by TLS tests

    return make_pki(tmp_path / "pki")


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """``make(**Mosquitto kwargs) -> started Mosquitto``; each gets its own work dir."""
    reason = mosquitto_missing()
    if reason:
        pytest.skip(reason)
    brokers: list[Mosquitto] = []

    def make(**kwargs: Any) -> Mosquitto:
        kwargs.setdefault("workdir", tmp_path / f"mosquitto-{len(brokers)}")
        broker = Mosquitto(**kwargs)
        brokers.append(broker)
        return broker.start()

    yield make
    for broker in brokers:
        broker.close()


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """A started anonymous broker with persistence on."""
    return mosquitto_factory(persistence=True)


@pytest.fixture
def subscriber_factory() -> Iterator[Callable[..., Subscriber]]:
    """``make(host, port, topics, **Subscriber kwargs) -> started Subscriber``."""
    subs: list[Subscriber] = []

    def make(*args: Any, **kwargs: Any) -> Subscriber:
        sub = Subscriber(*args, **kwargs)
        subs.append(sub)
        return sub.start()

    yield make
    for sub in subs:
        sub.close()


@pytest.fixture
def rtsp_factory() -> Iterator[Callable[..., RtspServer]]:
    """``make(**RtspServer kwargs) -> started RtspServer``."""
    reason = rtsp_missing()
    if reason:
        pytest.skip(reason)
    servers: list[RtspServer] = []

    def make(**kwargs: Any) -> RtspServer:
        server = RtspServer(**kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def fake_camera() -> Iterator[FakeCamera]:
    """Aravis' fake GigE Vision camera on loopback, serial LW01, started."""
    reason = fake_camera_missing()
    if reason:
        pytest.skip(reason)
    with FakeCamera() as camera:
        yield camera


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    with BlackHole() as server:
        yield server


@pytest.fixture
def garbage_server() -> Iterator[GarbageServer]:
    with GarbageServer() as server:
        yield server


@pytest.fixture
def daemon_factory() -> Iterator[Callable[..., DaemonProcess]]:
    """``make(env, args=("run",), **kw) -> started DaemonProcess``; all closed at teardown."""
    procs: list[DaemonProcess] = []

    def make(env: Mapping[str, str], args: Sequence[str] = ("run",), **kwargs: Any) -> DaemonProcess:
        proc = DaemonProcess(env, args, **kwargs)
        procs.append(proc)
        return proc.start()

    yield make
    for proc in procs:
        proc.close()
