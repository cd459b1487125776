"""Aravis' own fake GigE Vision camera (`arv-fake-gv-camera-0.8`, Debian aravis-tools) on loopback: the real GVCP
control and GVSP stream protocols, software-triggered or free-running, killable and restartable like a camera whose
cable is pulled. GigE Vision's control port is fixed (3956), so one runs at a time."""

from __future__ import annotations

import shutil
import subprocess
import time

from daemon.sources.genicam_lib import GVCP_PORT, gige_answers
from tests.support import _children

BINARY = "arv-fake-gv-camera-0.8"


def fake_camera_missing() -> str | None:
    return None if shutil.which(BINARY) else f"{BINARY} not found (apt install aravis-tools)"


def answers(host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    """Whether a GigE Vision device answers discovery on host:3956 (linewatch's own check of a camera's link)."""
    return gige_answers(host, timeout, tries=1)


class FakeCamera(_children.ChildProcess):
    """One fake camera. Spawned like every service of the harness (tests/support/_children.py): reaped at exit and
    killed with the test run (a camera left behind answers discovery on 3956 and every later start refuses)."""

    what = BINARY

    def __init__(self, serial: str = "LW01", host: str = "127.0.0.1") -> None:
        super().__init__()
        self.serial = serial
        self.host = host

    @property
    def url(self) -> str:
        return f"genicam://{self.serial}"

    def start(self, timeout: float = 10.0) -> FakeCamera:
        if answers(self.host):
            raise RuntimeError(f"another GigE Vision device already answers on {self.host}:{GVCP_PORT}")
        proc = self._adopt(_children.spawn([BINARY, "-i", self.host, "-s", self.serial], stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout
        while not answers(self.host):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{BINARY} did not answer discovery (exit {proc.poll()})")
        return self

    def restart(self) -> FakeCamera:
        self.kill()  # the camera loses power: no goodbye on the wire
        return self.start()

    def close(self) -> None:
        self.kill()
