"""The OPC UA server (OPC 40100-1 Machine Vision) against a real asyncua client playing the PLC: the state machines
follow the camera, StartSingleJob returns a JobId and its result comes as a ResultReadyEvent and in LastResult,
StartSingleJob is refused unless Ready, and anonymous access is off once a user is configured. Real job stages and a
real outbox behind it; inspected frames are fed as the event stage would."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua

from daemon.events.job_stage import VERDICT, JobStage
from daemon.events.jobs import JobRules, Look
from daemon.frames import BBox, CameraState, CameraStatus, Detection, ModelInfo, utc_now
from daemon.metrics import Metrics
from daemon.outbox import Outbox, OutboxLimits
from daemon.plc.opcua import MV_URI, NS_URI, OpcUaOptions, OpcUaServer
from tests.support.net import free_port

pytestmark = pytest.mark.slow  # outside the unit tier (pyproject.toml: markers)

MODEL = ModelInfo("m", "0" * 64, 640, "cpu", ("scratch",))
SCRATCH = Detection("scratch", 0, 0.9, BBox(300, 100, 330, 120))


class Station:
    def __init__(self, tmp_path: Path, **options: Any) -> None:
        self.stop = threading.Event()
        self.outbox = Outbox(tmp_path / "o.db", OutboxLimits(10_000_000, 1e9, kind_max_bytes={VERDICT: 10_000_000}),
                             synchronous="NORMAL")
        self.stage = JobStage("cam1", JobRules(frames=1, confirm_hits=1, timeout_ms=2000), MODEL, self.outbox,
                              self.stop, Metrics())
        self.stage.start()
        self.url = f"opc.tcp://127.0.0.1:{free_port()}/linewatch/"
        settings = {"endpoint": self.url, "security": "none", "certificate": None, "private_key": None,
                    "username": None, "password": None, "anonymous": True, **options}
        self.server = OpcUaServer(OpcUaOptions(**settings), [self.stage], Metrics())
        self.server.start()
        self.seq = 0

    def camera(self, state: CameraState) -> None:
        self.stage.camera_changed(CameraStatus("cam1", state, "test", utc_now()))

    def frame(self, *detections: Detection) -> None:
        now = time.monotonic()
        self.stage.look(Look(self.seq, now, utc_now(), now, 640, 480, detections))
        self.seq += 1

    def close(self) -> None:
        self.server.stop()
        self.stage.stop()
        self.stage.join(5)
        self.outbox.close()


@pytest.fixture
def station(tmp_path: Path) -> Iterator[Station]:
    made = Station(tmp_path)
    yield made
    made.close()


async def until(read: Any, wanted: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await read()
        if value == wanted:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"{await read()!r}, not {wanted!r}, by the deadline")


class Events:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def event_notification(self, event: Any) -> None:
        self.queue.put_nowait(event)


def test_a_plc_starts_a_single_job_and_gets_its_result_as_an_event_and_in_last_result(station: Station) -> None:
    async def plc() -> None:
        async with Client(station.url) as client:
            await client.load_data_type_definitions()
            mv, ns = await client.get_namespace_index(MV_URI), await client.get_namespace_index(NS_URI)
            system = await client.nodes.objects.get_child([f"{ns}:cam1"])
            vision = await system.get_child([f"{mv}:VisionStateMachine", "0:CurrentState"])
            machine = await system.get_child([f"{mv}:VisionStateMachine", f"{mv}:AutomaticModeStateMachine"])
            automatic = await machine.get_child(["0:CurrentState"])
            start = await machine.get_child([f"{mv}:StartSingleJob"])

            async def text(node: Any) -> str:
                return str((await node.read_value()).Text or "")

            # Before the camera is online the system is in Error, and a job is refused with BadInvalidState (the
            # Machine Vision answer a PLC checks for), not an error the server did not expect
            assert await until(lambda: text(vision), "Error") == "Error"
            with pytest.raises(ua.uaerrors.BadInvalidState):
                await machine.call_method(start, None, ua.PartIdDataType(Id="P-0"), None, None)
            with pytest.raises(ua.uaerrors.BadInvalidState):
                await machine.call_method(await machine.get_child([f"{mv}:StartContinuous"]), None, None, None, None)
            station.camera(CameraState.ONLINE)
            await until(lambda: text(vision), "Operational")
            await until(lambda: text(automatic), "Ready")
            events = Events()
            subscription = await client.create_subscription(50, events)
            await subscription.subscribe_events(system, ua.NodeId(1024, mv))
            job = await machine.call_method(start, None, ua.PartIdDataType(Id="P-1"), None, None)
            await until(lambda: text(automatic), "SingleExecution")
            station.frame(SCRATCH)
            event = await asyncio.wait_for(events.queue.get(), 5)
            assert event.PartId.Id == "P-1" and event.JobId.Id == job.Id
            last = await system.get_child([f"{ns}:LastResult"])
            values = {name: await (await last.get_child([f"{ns}:{name}"])).read_value()
                      for name in ("PartId", "JobId", "ResultEvaluation", "ResultState", "Seq")}
            assert values == {"PartId": "P-1", "JobId": job.Id, "ResultEvaluation": 2, "ResultState": 1, "Seq": 1}
            await until(lambda: text(automatic), "Ready")
            # StartContinuous: free-run on and shown; Stop: off again
            await machine.call_method(await machine.get_child([f"{mv}:StartContinuous"]), None, None, None, None)
            await until(lambda: text(automatic), "ContinuousExecution")
            assert station.stage.free_run
            await machine.call_method(await machine.get_child([f"{mv}:Stop"]))
            await until(lambda: text(automatic), "Ready")
            assert not station.stage.free_run
            # The heartbeat moves; a camera that goes away shows as Error at once
            beat = await system.get_child([f"{ns}:Heartbeat"])
            first = await beat.read_value()
            await until(lambda: beat.read_value(), first + 1)
            station.camera(CameraState.RECONNECTING)
            await until(lambda: text(vision), "Error")

    asyncio.run(plc())


def test_with_a_user_configured_anonymous_access_is_off_and_a_wrong_password_is_refused(tmp_path: Path) -> None:
    station = Station(tmp_path, username="plc", password="s3cret", anonymous=False)
    try:
        async def connect(user: str | None, password: str | None) -> bool:
            client = Client(station.url)
            if user is not None:
                client.set_user(user)
                client.set_password(password or "")
            try:
                await client.connect()
            except Exception:
                return False
            await client.disconnect()
            return True

        async def attempts() -> list[bool]:
            return [await connect(None, None), await connect("plc", "wrong"), await connect("plc", "s3cret")]

        assert asyncio.run(attempts()) == [False, False, True]
    finally:
        station.close()


def rsa_certificate(directory: Path, name: str, uri: str) -> tuple[Path, Path]:
    """A self-signed RSA certificate (DER) and key (PEM) with the application URI OPC UA wants in its SAN."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=True,
                                         data_encipherment=True, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.der", directory / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_sign_and_encrypt_takes_an_encrypted_session_with_a_user_and_refuses_a_plain_one(tmp_path: Path) -> None:
    server_cert, server_key = rsa_certificate(tmp_path, "server", "urn:linewatch")
    client_cert, client_key = rsa_certificate(tmp_path, "client", "urn:plc:client")
    station = Station(tmp_path, security="sign_and_encrypt", certificate=server_cert, private_key=server_key,
                      username="plc", password="pw", anonymous=False)
    try:
        async def sessions() -> tuple[bool, str]:
            plain = Client(station.url)
            plain.set_user("plc")
            plain.set_password("pw")
            try:
                await plain.connect()
                await plain.disconnect()
                plain_ok = True
            except Exception:
                plain_ok = False
            secure = Client(station.url)
            secure.application_uri = "urn:plc:client"
            await secure.set_security_string(f"Basic256Sha256,SignAndEncrypt,{client_cert},{client_key}")
            secure.set_user("plc")
            secure.set_password("pw")
            async with secure:
                mv, ns = await secure.get_namespace_index(MV_URI), await secure.get_namespace_index(NS_URI)
                state = await (await secure.nodes.objects.get_child(
                    [f"{ns}:cam1", f"{mv}:VisionStateMachine", "0:CurrentState"])).read_value()
            return plain_ok, str(state.Text)

        assert asyncio.run(sessions()) == (False, "Error")  # no plain session; the camera is not online yet
    finally:
        station.close()
