"""Liveness, readiness and the one-line status, all read from the stages' own state and the metrics.

`/healthz`, `/readyz`, the systemd watchdog ping and its `STATUS=` line all ask this one object, so they can
never disagree. Liveness: every stage thread alive, none failed, none stuck in one unit of work beyond its
limit (a camera that is reconnecting is alive: the daemon is doing its job). Readiness: the model is warmed
up, every camera delivered a frame within its stall timeout, and events can go somewhere (the broker is
connected, or the outbox is accepting).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from daemon.exitcodes import FailureKind
from daemon.frames import CameraState, CameraStatus
from daemon.lifecycle import StageThread
from daemon.metrics import Metrics


class CameraProbe(Protocol):
    camera_id: str
    stall_timeout_s: float

    @property
    def status(self) -> CameraStatus: ...

    @property
    def last_frame_mono(self) -> float | None: ...


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reasons: tuple[str, ...]
    detail: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "fail", "reasons": list(self.reasons), **self.detail}


@dataclass
class _Watched:
    stage: StageThread
    limit_s: float  # a unit of work lasting longer than this means the stage is wedged
    isolated: bool  # a camera's capture: its failure shows in readiness (its camera's state), not liveness
    may_end: Callable[[], bool]  # True once the stage has a reason to have ended (its camera's frames ended)


class Health:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.model_ready = threading.Event()
        self._stages: list[_Watched] = []
        self._cameras: list[CameraProbe] = []
        self._broker_connected: Callable[[], bool] = lambda: False
        self._outbox_accepting: Callable[[], bool] = lambda: False
        self._fps_mark: tuple[float, dict[str, float]] | None = None
        self.last_liveness = Verdict(True, ())  # as readiness() last computed it

    # -- wiring (composition root) ----------------------------------------------------------------------
    def watch_stage(self, stage: StageThread, limit_s: float, *, isolated: bool = False,
                    may_end: Callable[[], bool] = lambda: False) -> None:
        self._stages.append(_Watched(stage, limit_s, isolated, may_end))

    def watch_camera(self, camera: CameraProbe) -> None:
        self._cameras.append(camera)

    def watch_delivery(self, broker_connected: Callable[[], bool], outbox_accepting: Callable[[], bool]) -> None:
        self._broker_connected = broker_connected
        self._outbox_accepting = outbox_accepting

    # -- verdicts --------------------------------------------------------------------------------------
    @staticmethod
    def _judge(watched: _Watched, now: float) -> tuple[str, str | None, float]:
        """(state, the reason it makes the daemon not live or None, seconds in its current unit of work)."""
        stage = watched.stage
        stuck = stage.progress.stuck_for(now)
        if stage.failure is not None:
            counts = not watched.isolated or stage.failure.kind is FailureKind.STALLED
            reason = f"{stage.name} failed ({stage.failure.kind.value}): {stage.failure.reason}"
            return "failed", reason if counts else None, stuck
        if stage.started and not stage.alive:
            counts = not watched.isolated and not watched.may_end()
            return "ended", f"{stage.name} is not running" if counts else None, stuck
        if stuck > watched.limit_s:
            reason = f"{stage.name} stuck in one unit of work for {stuck:.1f} s (limit {watched.limit_s:g} s)"
            return "wedged", reason, stuck
        return "running", None, stuck

    def liveness(self, now: float | None = None) -> Verdict:
        now = time.monotonic() if now is None else now
        reasons: list[str] = []
        stages: dict[str, Any] = {}
        for watched in self._stages:
            state, reason, stuck = self._judge(watched, now)
            if reason is not None:
                reasons.append(reason)
            stages[watched.stage.name] = {"state": state, "busy_s": round(stuck, 3), "limit_s": watched.limit_s,
                                          "units": watched.stage.progress.units}
        phase = "running" if self._stages else "starting"
        verdict = Verdict(not reasons, tuple(reasons), {"phase": phase, "stages": stages})
        self._metrics.healthy.set(1 if verdict.ok else 0)
        return verdict

    def unlive_stages(self, now: float | None = None) -> list[tuple[StageThread, str]]:
        """The stages that make the daemon not live, with why: whom it names when it exits for that."""
        now = time.monotonic() if now is None else now
        judged = ((watched.stage, self._judge(watched, now)[1]) for watched in self._stages)
        return [(stage, reason) for stage, reason in judged if reason is not None]

    def readiness(self, now: float | None = None) -> Verdict:
        now = time.monotonic() if now is None else now
        reasons: list[str] = []
        if not self.model_ready.is_set():
            reasons.append("model not loaded and warmed up yet")
        cameras: dict[str, Any] = {}
        for camera in self._cameras:
            status, last = camera.status, camera.last_frame_mono
            age = None if last is None else now - last
            cameras[camera.camera_id] = {"state": status.state.value, "reason": status.reason,
                                         "last_frame_age_s": None if age is None else round(age, 3)}
            if status.state is not CameraState.ONLINE:
                reasons.append(f"camera {camera.camera_id} is {status.state.value}: {status.reason}")
            elif age is None or age > camera.stall_timeout_s:
                reasons.append(f"camera {camera.camera_id}: no frame within its stall timeout "
                               f"({camera.stall_timeout_s:g} s)")
        connected, accepting = self._broker_connected(), self._outbox_accepting()
        if not connected and not accepting:
            reasons.append("broker not connected and the outbox is not accepting (disk full)")
        self.last_liveness = self.liveness(now)
        if self._stages and not self.last_liveness.ok:
            reasons.append("not live (see /healthz)")
        verdict = Verdict(not reasons, tuple(reasons), {
            "model_ready": self.model_ready.is_set(), "cameras": cameras,
            "broker_connected": connected, "outbox_accepting": accepting,
        })
        self._metrics.ready.set(1 if verdict.ok else 0)
        return verdict

    def status_line(self, now: float | None = None) -> str:
        """`cam1 online 14.9 fps, outbox 0` for systemd's STATUS=; fps over the time since the last call."""
        now = time.monotonic() if now is None else now
        inspected = {c.camera_id: self._metrics.value("linewatch_frames_inspected_total", camera=c.camera_id)
                     for c in self._cameras}
        previous, self._fps_mark = self._fps_mark, (now, inspected)
        parts = []
        for camera in self._cameras:
            fps = ""
            if previous is not None and now > previous[0]:
                rate = (inspected[camera.camera_id] - previous[1].get(camera.camera_id, 0.0)) / (now - previous[0])
                fps = f" {rate:.1f} fps"
            parts.append(f"{camera.camera_id} {camera.status.state.value}{fps}")
        outbox = int(self._metrics.value("linewatch_outbox_events"))
        broker = "mqtt up" if self._broker_connected() else "mqtt down"
        full = ", disk full" if not self._outbox_accepting() else ""
        return f"{', '.join(parts) or 'starting'}, {broker}, outbox {outbox}{full}"
