"""The OPC UA server for the line's PLC (asyncua), following OPC 40100-1 Machine Vision: one `VisionSystemType` object
per camera with inspection jobs, instantiated from the OPC Foundation's NodeSet (nodesets/, MIT licence), on its own
thread (`plc:opcua`) running an asyncio loop.

What a PLC gets, per camera (`Objects/<camera_id>`):
- `VisionStateMachine/CurrentState`: Preoperational (starting), Operational, Error (the camera is not online), Halted
  (stopping); inside Operational, `AutomaticModeStateMachine/CurrentState`: Ready, SingleExecution (a job is open),
  ContinuousExecution (free-run: the camera's own triggers start jobs), Initialized (not ready);
- `AutomaticModeStateMachine/StartSingleJob(MeasId, PartId, ExternalRecipeId, ProductId) -> JobId` (Bad_InvalidState
  unless Ready), `StartContinuous(...) -> JobId` and `Stop()` (free-run on and off);
- a `ResultReadyEventType` event from the camera's object for each verdict (ResultState: 1 Completed for pass and ng,
  3 Aborted when the daemon stopped, 4 Failed for any other unknown), and `LastResult` (linewatch's namespace) with the
  verdict as OPC 40001-101's ResultEvaluation (1 OK, 2 NotOK, 3 NotDecidable), the ids and the times;
- `Heartbeat`: +1 every second.

Verdicts are live here: an event is sent once, when the verdict is made; a client that was away does not get it later
(MQTT has every verdict).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.instantiate_util import instantiate
from asyncua.common.node import Node
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server

from daemon.events.job_stage import Decided, JobStage, TriggerRefused
from daemon.events.jobs import PART_ID_MAX, Why, clean_part_id
from daemon.logs import get_logger
from daemon.metrics import Metrics
from daemon.plc.loop import LoopServer

log = get_logger("linewatch.plc")

NODESET = Path(__file__).resolve().parent / "nodesets" / "Opc.Ua.MachineVision.NodeSet2.xml"
MV_URI = "http://opcfoundation.org/UA/MachineVision"
NS_URI = "urn:linewatch"
VISION_SYSTEM_TYPE, RESULT_READY_EVENT_TYPE = 1003, 1024
VISION_STATES_TYPE, AUTOMATIC_STATES_TYPE = 1017, 1021
EVALUATION = {"pass": 1, "ng": 2, "unknown": 3}  # OPC 40001-101 ResultEvaluationEnum: OK, NotOK, NotDecidable
_STATE_EVERY_S = 0.2
HAS_NOTIFIER = 48  # ReferenceType i=48
# Refusals are returned, not raised: asyncua answers any exception from a method with BadUnexpectedError (and logs a
# traceback), while a PLC checks for BadInvalidState (OPC 40100-1: the method is not allowed in the current state).
REFUSED = ua.StatusCode(0x80AF0000)  # type: ignore[arg-type]  # BadInvalidState; asyncua's stubs want UInt32


def _node_id(identifier: int, namespace: int) -> ua.NodeId:
    return ua.NodeId(identifier, namespace)  # type: ignore[arg-type]  # asyncua's stubs want its own int wrappers


@dataclass(frozen=True)
class OpcUaOptions:
    endpoint: str
    security: str  # none | sign | sign_and_encrypt
    certificate: Path | None
    private_key: Path | None
    username: str | None
    password: str | None
    anonymous: bool


class _Users:
    """One user (the PLC's), and anonymous only when allowed."""

    def __init__(self, options: OpcUaOptions) -> None:
        self._options = options

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        wanted = self._options
        if username is None:  # anonymous (no X509 user tokens are offered; `certificate` is the channel's)
            return User(role=UserRole.User) if wanted.anonymous else None
        if username is not None and wanted.username is not None and wanted.password is not None and (
                hmac.compare_digest(username.encode(), wanted.username.encode())
                and hmac.compare_digest((password or "").encode(), wanted.password.encode())):
            return User(role=UserRole.User, name=username)
        return None


@dataclass
class _Camera:
    stage: JobStage
    vision_state: Node
    automatic_state: Node
    heartbeat: Node
    last: dict[str, Node]
    events: Any  # asyncua's EventGenerator
    states: tuple[str, str] = ("", "")
    continuous: bool = False  # StartContinuous called (and no Stop since)


class OpcUaServer(LoopServer):
    def __init__(self, options: OpcUaOptions, jobs: Sequence[JobStage], metrics: Metrics) -> None:
        super().__init__("plc:opcua")
        self._options = options
        self._jobs = list(jobs)
        self._metrics = metrics
        self._stopping = False
        self._verdicts: asyncio.Queue[Decided] = asyncio.Queue()  # the job stages' verdicts, for the loop
        self._cameras: dict[str, _Camera] = {}
        for stage in self._jobs:
            stage.listen(self._hand_over)

    def start(self) -> None:
        super().start()
        log.info("opcua_listening", endpoint=self._options.endpoint, security=self._options.security,
                 anonymous=self._options.anonymous, cameras=list(self._cameras))

    def _refusal(self, error: str) -> str:
        return f"cannot serve OPC UA at {self._options.endpoint}: {error}; set LINEWATCH_OPCUA__ENDPOINT to a free port"

    def stop(self, deadline: float | None = None) -> None:
        self._stopping = True
        super().stop(deadline)

    # -- the loop's thread --------------------------------------------------------------------------------------------
    def _hand_over(self, decided: Decided) -> None:
        self.call(self._verdicts.put_nowait, decided)  # one consumer publishes them, in order

    async def _serve(self) -> None:
        options = self._options
        server = Server(user_manager=_Users(options))  # type: ignore[arg-type]
        await server.init()
        server.set_endpoint(options.endpoint)
        server.set_server_name("linewatch")
        await server.set_application_uri(NS_URI)
        policy = {"none": ua.SecurityPolicyType.NoSecurity, "sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
                  "sign_and_encrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt}[options.security]
        server.set_security_policy([policy])
        tokens: list[Any] = ([ua.AnonymousIdentityToken] if options.anonymous else []) + (
            [ua.UserNameIdentityToken] if options.username else [])
        server.set_identity_tokens(tokens)
        if options.certificate is not None and options.private_key is not None:
            await server.load_certificate(str(options.certificate))
            await server.load_private_key(str(options.private_key))
        await server.import_xml(str(NODESET))
        await server.load_data_type_definitions()
        mv = await server.get_namespace_index(MV_URI)
        ns = await server.register_namespace(NS_URI)
        for stage in self._jobs:
            self._cameras[stage.camera_id] = await self._camera(server, stage, mv, ns)
        async with server:
            self._listening.set()
            consumer = asyncio.create_task(self._consume())
            ticks = 0
            while not self._closing.is_set():
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), _STATE_EVERY_S)
                ticks += 1
                for camera in self._cameras.values():
                    await self._follow(camera, mv)
                    if ticks % round(1 / _STATE_EVERY_S) == 0:
                        beat = await camera.heartbeat.read_value()
                        await camera.heartbeat.write_value(ua.Variant((beat + 1) % 2**32, ua.VariantType.UInt32))
            consumer.cancel()

    async def _consume(self) -> None:
        while True:
            decided = await self._verdicts.get()
            try:
                await self._publish(decided)
            except Exception:  # one verdict's event failed; the next ones still go (MQTT has them all)
                log.exception("opcua_publish_failed", job_id=decided.result.trigger.job_id)

    async def _camera(self, server: Server, stage: JobStage, mv: int, ns: int) -> _Camera:
        objects = server.nodes.objects
        root = (await instantiate(objects, server.get_node(_node_id(VISION_SYSTEM_TYPE, mv)),
                                  bname=ua.QualifiedName(stage.camera_id, ns), dname=ua.LocalizedText(stage.camera_id),
                                  idx=ns))[0]
        await root.set_event_notifier([ua.EventNotifier.SubscribeToEvents])
        await server.nodes.server.add_reference(root.nodeid, HAS_NOTIFIER)  # events reach Server too
        machine = await root.get_child([f"{mv}:VisionStateMachine"])
        automatic = await machine.get_child([f"{mv}:AutomaticModeStateMachine"])
        server.link_method(await automatic.get_child([f"{mv}:StartSingleJob"]), self._single(stage))
        server.link_method(await automatic.get_child([f"{mv}:StartContinuous"]), self._continuous(stage, True))
        server.link_method(await automatic.get_child([f"{mv}:Stop"]), self._continuous(stage, False))
        heartbeat = await root.add_variable(ns, "Heartbeat", ua.Variant(0, ua.VariantType.UInt32))
        result = await root.add_object(ns, "LastResult")
        last = {name: await result.add_variable(ns, name, ua.Variant(value, kind)) for name, value, kind in (
            ("ResultId", "", ua.VariantType.String), ("PartId", "", ua.VariantType.String),
            ("JobId", "", ua.VariantType.String), ("ResultState", 0, ua.VariantType.Int32),
            ("ResultEvaluation", 0, ua.VariantType.Int32), ("Seq", 0, ua.VariantType.UInt32),
            ("Reasons", [], ua.VariantType.String), ("CreationTime", dt.datetime(1601, 1, 1, tzinfo=dt.timezone.utc),
                                                     ua.VariantType.DateTime),
            ("ProcessingTimeMs", 0.0, ua.VariantType.Double))}
        events = await server.get_event_generator(server.get_node(_node_id(RESULT_READY_EVENT_TYPE, mv)), root)
        camera = _Camera(stage, await machine.get_child(["0:CurrentState"]),
                         await automatic.get_child(["0:CurrentState"]), heartbeat, last, events)
        await self._follow(camera, mv)
        return camera

    def _single(self, stage: JobStage) -> Any:
        async def start_single_job(parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant] | ua.StatusCode:
            if not stage.ready:
                return REFUSED
            part = getattr(args[1].Value, "Id", None) if len(args) > 1 else None
            try:
                trigger = stage.trigger("plc_opcua", clean_part_id(str(part or "")[:PART_ID_MAX]))
            except (TriggerRefused, ValueError):
                return REFUSED
            return [ua.Variant(ua.JobIdDataType(Id=trigger.job_id))]  # type: ignore[attr-defined]
        return start_single_job

    def _continuous(self, stage: JobStage, on: bool) -> Any:
        async def switch(parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant] | ua.StatusCode:
            if on and not stage.ready:
                return REFUSED
            stage.free_run = on
            self._cameras[stage.camera_id].continuous = on
            log.info("opcua_free_run", camera_id=stage.camera_id, free_run=on)
            if on:
                return [ua.Variant(ua.JobIdDataType(Id=f"{stage.camera_id}-continuous"))]  # type: ignore[attr-defined]
            return []
        return switch

    async def _follow(self, camera: _Camera, mv: int) -> None:
        """The state machines' current states, from the daemon's real state (written when they change)."""
        stage = camera.stage
        vision = ("Halted" if self._stopping else "Preoperational" if not stage.model_ready else
                  "Error" if not stage.camera_online else "Operational")
        automatic = ("ContinuousExecution" if camera.continuous else "SingleExecution" if stage.open_jobs else
                     "Ready" if stage.ready else "Initialized") if vision == "Operational" else ""
        if (vision, automatic) == camera.states:
            return
        camera.states = (vision, automatic)
        await camera.vision_state.write_value(ua.LocalizedText(vision))
        await camera.automatic_state.write_value(ua.LocalizedText(automatic))

    async def _publish(self, decided: Decided) -> None:
        camera = self._cameras.get(decided.result.trigger.camera_id)
        if camera is None:
            return
        result, trigger = decided.result, decided.result.trigger
        state = (1 if result.verdict.value != "unknown" else 3 if Why.STOPPING in result.reasons else 4)
        values = {"ResultId": trigger.job_id, "PartId": trigger.part_id, "JobId": trigger.job_id,
                  "ResultState": state, "ResultEvaluation": EVALUATION[result.verdict.value],
                  "Seq": decided.seq or 0, "Reasons": [r.value for r in result.reasons],
                  "CreationTime": result.decided_utc, "ProcessingTimeMs": result.latency_ms}
        for name, value in values.items():
            node = camera.last[name]
            await node.write_value(ua.Variant(value, await node.read_data_type_as_variant_type()))
        event = camera.events.event
        event.PartId = ua.PartIdDataType(Id=trigger.part_id)  # type: ignore[attr-defined]
        event.JobId = ua.JobIdDataType(Id=trigger.job_id)  # type: ignore[attr-defined]
        event.CreationTime = result.decided_utc
        event.IsPartial = False
        event.ResultContent = [ua.Variant(EVALUATION[result.verdict.value], ua.VariantType.Int32)]
        await camera.events.trigger(message=f"{result.verdict.value} {trigger.part_id}")
