"""Drive ``rtsp_server.py`` (a GStreamer RTSP server) as a child process."""

from __future__ import annotations

import contextlib
import functools
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO

from tests.support import _children
from tests.support.net import LOOPBACK, wait_port_bindable

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")

_PROBE = """
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in ("x264enc", "rtph264pay", "videotestsrc", "intervideosrc", "decodebin")
           if Gst.ElementFactory.find(e) is None]
print(" ".join(missing))
"""


@functools.cache
def rtsp_missing(python: str = SYSTEM_PYTHON) -> str | None:
    """Reason to skip RTSP tests, or None when GStreamer's RTSP server is usable."""
    if not Path(python).exists():
        return f"{python} not found"
    try:
        probe = subprocess.run(
            [python, "-c", _PROBE], capture_output=True, text=True, timeout=60, env=_children.system_env()
        )
    except subprocess.TimeoutExpired:
        return "GStreamer probe timed out"
    if probe.returncode != 0:
        return f"python3-gi / gir1.2-gst-rtsp-server-1.0 missing: {probe.stderr.strip()[-300:]}"
    if probe.stdout.strip():
        return f"GStreamer elements missing: {probe.stdout.strip()} (gstreamer1.0-plugins-*)"
    return None


class RtspError(RuntimeError):
    """The RTSP server did not come up; the message carries its output."""


class RtspServer(_children.ChildProcess):
    """An RTSP camera at ``url``: a moving test pattern, or ``file`` looped.

    The first ``start()`` lets the server bind a free port itself (no race with
    other tests); later starts reuse that port, as a camera that reboots would.
    """

    what = "RTSP server"

    def __init__(
        self,
        *,
        width: int = 640,
        height: int = 480,
        fps: int = 15,
        mount: str = "/cam",
        file: Path | None = None,
        pattern: str = "ball",
        port: int | None = None,
        python: str = SYSTEM_PYTHON,
        start_timeout: float = 20.0,
        user: str | None = None,
        password: str = "",
    ) -> None:
        self.width = width
        self.height = height
        self.fps = fps
        self.mount = mount if mount.startswith("/") else "/" + mount
        self.file = file
        self.pattern = pattern
        self.python = python
        self.start_timeout = start_timeout
        self.user = user  # when set, the camera answers 401 to anyone without this user and password
        self.password = password
        self._port = port
        self._url: str | None = None
        super().__init__()
        self._cond = threading.Condition()
        self._output: deque[str] = deque(maxlen=500)
        self._ready_url: str | None = None
        self._eof = False
        # Bumped per start so a previous process's reader thread, still draining
        # its pipe, cannot flag READY/EOF for the new one.
        self._generation = 0

    # -- addresses ---------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("port unknown until the first start()")
        return self._port

    @property
    def url(self) -> str:
        """``rtsp://127.0.0.1:PORT/MOUNT``; stable across restarts."""
        return f"rtsp://{LOOPBACK}:{self.port}{self.mount}"

    def output(self) -> str:
        """The server's recent stdout+stderr (GStreamer warnings land here)."""
        with self._cond:
            return "".join(self._output)

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> RtspServer:
        """Start the server; return once it printed READY (it is then listening)."""
        if self.running:
            raise RuntimeError("RTSP server already running")
        argv = [
            self.python, str(SERVER_SCRIPT),
            "--port", str(self._port or 0), "--mount", self.mount,
            "--width", str(self.width), "--height", str(self.height), "--fps", str(self.fps),
        ]  # fmt: skip
        argv += ["--file", str(self.file)] if self.file is not None else ["--pattern", self.pattern]
        if self.user is not None:
            argv += ["--user", self.user, "--password", self.password]
        with self._cond:
            self._generation += 1
            generation = self._generation
            self._ready_url = None
            self._eof = False
        proc = self._adopt(_children.spawn(
            argv, env=_children.system_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ))
        assert proc.stdout is not None
        threading.Thread(
            target=self._read_output,
            args=(proc.stdout, generation),
            name=f"rtsp-server-output:{proc.pid}",
            daemon=True,
        ).start()

        end = time.monotonic() + self.start_timeout
        with self._cond:
            while self._ready_url is None:
                remaining = end - time.monotonic()
                if self._eof or remaining <= 0:
                    break
                self._cond.wait(remaining)
            ready_url = self._ready_url
            exited = self._eof
        if ready_url is None:
            code: int | None = None
            if exited:
                # Output closed: the process is exiting; give the kernel a moment to report it.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = proc.wait(timeout=5)
            self.kill()
            why = f"exited with {code}" if code is not None else f"not ready within {self.start_timeout}s"
            raise RtspError(f"RTSP server {why}; output:\n{self.output()}")
        self._port = int(ready_url.rsplit(":", 1)[1].split("/", 1)[0])
        return self

    def restart(
        self,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: int | None = None,
        graceful: bool = True,
        rebind_timeout: float = 15.0,
    ) -> RtspServer:
        """Stop and start again on the same port, optionally with a new frame size/rate."""
        if self._port is None:
            raise RuntimeError("restart() before the first start()")
        if graceful:
            self.stop()
        else:
            self.kill()
        self.width = width if width is not None else self.width
        self.height = height if height is not None else self.height
        self.fps = fps if fps is not None else self.fps
        wait_port_bindable(LOOPBACK, self._port, rebind_timeout)
        return self.start()

    # -- internals ---------------------------------------------------------

    def _read_output(self, stream: IO[str], generation: int) -> None:
        with stream:
            for line in stream:
                with self._cond:
                    self._output.append(line)
                    current = generation == self._generation
                    if current and self._ready_url is None and line.startswith("READY "):
                        self._ready_url = line.split(None, 1)[1].strip()
                    self._cond.notify_all()
        with self._cond:
            if generation == self._generation:
                self._eof = True
            self._cond.notify_all()
