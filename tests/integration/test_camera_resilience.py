"""Cameras that fail, stall and come back (issue 4).

A real GStreamer RTSP server on loopback (serving `line_video`), real hostile TCP peers, a real mosquitto and
the daemon as a real process. The outages are the lengths the issue prescribes (10 s killed, up to 20 s
stopped); everything else waits on log records, MQTT messages or deadlines, never on a fixed sleep.
"""

from __future__ import annotations

import datetime as dt
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.backoff import Backoff
from daemon.exitcodes import ExitCode
from daemon.frames import Frame, Image
from daemon.handoff import DropPolicy, Handoff
from daemon.ops.watchdog import StallWatchdog
from daemon.sources.capture import CameraState, CameraStatus, CaptureStage
from daemon.synthetic.line import CLASS_NAMES
from tests.integration.camera_helpers import (
    crash_records,
    first_defect_after,
    has_defect,
    keep_outage_until,
    log_time,
    open_durations,
    retries,
    status_states,
    wait_for_attempt,
)
from tests.integration.payloads import assert_gapless, assert_valid_defect_event, parse_time
from tests.support.mosquitto import Mosquitto
from tests.support.procs import DaemonProcess, fd_count, thread_count
from tests.support.rtsp import RtspServer
from tests.support.subscriber import Message, Subscriber

pytestmark = pytest.mark.integration

CAM = "cam1"
BOOT_S = 120.0  # model load and warm-up on a CPU shared with other work
EVENTS_S = 60.0
SHUTDOWN_S = 8.0  # LINEWATCH_PIPELINE__SHUTDOWN_TIMEOUT_S default, set explicitly below
# Reconnect settings for the RTSP tests: a short cap keeps "time back" small and measurable.
BACKOFF_INITIAL_S, BACKOFF_MAX_S = 0.5, 2.0
OPEN_TIMEOUT_S, READ_TIMEOUT_S = 3.0, 2.0

EnvFactory = Callable[..., dict[str, str]]


def camera_env(daemon_env: EnvFactory, url: str, broker_url: str, **camera: str) -> dict[str, str]:
    """The daemon's environment: camera `cam1`, debug logs (for `camera_retry`), the given camera settings."""
    extra = {f"LINEWATCH_CAMERA__{key.upper()}": value for key, value in camera.items()}
    return daemon_env(url, broker_url, LINEWATCH_CAMERA__ID=CAM, LINEWATCH_LOG__LEVEL="debug",
                      LINEWATCH_PIPELINE__SHUTDOWN_TIMEOUT_S=str(SHUTDOWN_S), **extra)


def rtsp_env(daemon_env: EnvFactory, url: str, broker_url: str) -> dict[str, str]:
    return camera_env(daemon_env, url, broker_url, backoff_initial_s=str(BACKOFF_INITIAL_S),
                      backoff_max_s=str(BACKOFF_MAX_S), open_timeout_s=str(OPEN_TIMEOUT_S),
                      read_timeout_s=str(READ_TIMEOUT_S))


def stop_cleanly(daemon: DaemonProcess) -> float:
    """SIGTERM; assert exit code 0; return how long the exit took (the tests about shutdown bound it)."""
    daemon.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    code = daemon.wait(timeout=SHUTDOWN_S + 10)
    took = time.monotonic() - sent
    assert code == ExitCode.OK, daemon.describe()
    return took


# -- 1. server killed -------------------------------------------------------------------------------------


def test_a_killed_camera_is_retried_and_events_resume_within_the_backoff_cap_of_its_return(
    mosquitto: Mosquitto,
    rtsp_factory: Callable[..., RtspServer],
    subscriber_factory: Callable[..., Subscriber],
    daemon_factory: Callable[..., DaemonProcess],
    daemon_env: EnvFactory,
    line_video: Path,
) -> None:
    """Given a streaming RTSP camera, when its server is SIGKILLed for 10 s and restarted on the same port,
    then defect events resume within backoff cap + 2 s of its return, and the retained status goes
    online → reconnecting → online."""
    camera = rtsp_factory(file=line_video, width=640, height=480, fps=10)
    sub = subscriber_factory(mosquitto.host, mosquitto.port, [f"linewatch/{CAM}/#"])
    daemon = daemon_factory(rtsp_env(daemon_env, camera.url, mosquitto.url))
    daemon.wait_for_event("camera_state", BOOT_S, state="online")
    sub.wait_for(has_defect, EVENTS_S)

    mark = daemon.mark()
    killed_wall = dt.datetime.now(dt.timezone.utc)
    camera.kill()
    killed = time.monotonic()
    lost = daemon.wait_for_event("camera_state", READ_TIMEOUT_S + 5, since=mark, state="reconnecting")
    detected_s = time.monotonic() - killed
    keep_outage_until(daemon, killed + 10.0)
    camera.restart()  # returns once the new server listens on the old port
    back = time.monotonic()
    back_wall = dt.datetime.now(dt.timezone.utc)

    messages = sub.wait_for(lambda ms: first_defect_after(ms, back) is not None, 30)
    first = first_defect_after(messages, back)
    assert first is not None
    time_back_s = first.arrived - back
    online = daemon.wait_for_event("camera_state", 5, since=mark, state="online")
    print(f"\nkill noticed after {detected_s:.2f} s ({lost['reason']}); {len(retries(daemon, mark))} failed "
          f"attempts during the outage; after the server returned: camera online in "
          f"{(log_time(online) - back_wall).total_seconds():.2f} s, first event in {time_back_s:.2f} s")
    assert parse_time(first.json()["captured_at"]) > killed_wall, "an old frame, not one after the return"
    assert time_back_s <= BACKOFF_MAX_S + 2.0, f"events resumed {time_back_s:.2f} s after the camera returned"

    states = status_states(sub.wait_for(lambda ms: status_states(ms)[-1] == "online", 10))
    assert states[states.index("online"):] == ["online", "reconnecting", "online"], states
    # Retried with backoff during the outage, never faster than the first delay allows nor slower than the cap.
    outage = retries(daemon, mark)
    assert len(outage) >= 3, outage
    assert all(0 < r["delay_s"] <= BACKOFF_MAX_S for r in outage), [r["delay_s"] for r in outage]
    late = subscriber_factory(mosquitto.host, mosquitto.port, [f"linewatch/{CAM}/status"])
    retained = late.wait_for(lambda ms: len(ms) >= 1, 10)[0]
    assert retained.retain and retained.json()["state"] == "online", retained

    stop_cleanly(daemon)
    assert not crash_records(daemon), crash_records(daemon)


# -- 2. server stopped ------------------------------------------------------------------------------------


def test_a_hung_camera_is_noticed_by_the_read_deadline_and_sigterm_still_exits_in_time(
    mosquitto: Mosquitto,
    rtsp_factory: Callable[..., RtspServer],
    subscriber_factory: Callable[..., Subscriber],
    daemon_factory: Callable[..., DaemonProcess],
    daemon_env: EnvFactory,
    line_video: Path,
) -> None:
    """Given a streaming RTSP camera, when its server is SIGSTOPped (sockets open, nothing flows), then the
    daemon reports `reconnecting` within the read deadline + a margin, keeps retrying with opens that time
    out instead of hanging, and a SIGTERM sent during the stall ends it with code 0 within its shutdown
    deadline. The stall lasts at most 20 s: SIGTERM goes 12 s in, so the whole 8 s deadline fits inside it."""
    camera = rtsp_factory(file=line_video, width=640, height=480, fps=10)
    sub = subscriber_factory(mosquitto.host, mosquitto.port, [f"linewatch/{CAM}/#"])
    daemon = daemon_factory(rtsp_env(daemon_env, camera.url, mosquitto.url))
    daemon.wait_for_event("camera_state", BOOT_S, state="online")
    sub.wait_for(has_defect, EVENTS_S)  # frames are flowing through the whole pipeline

    mark = daemon.mark()
    camera.pause()
    paused = time.monotonic()
    try:
        lost = daemon.wait_for_event("camera_state", READ_TIMEOUT_S + 10, since=mark, state="reconnecting")
        detected_s = time.monotonic() - paused
        assert detected_s <= READ_TIMEOUT_S + 2.0, f"a hung camera took {detected_s:.2f} s to notice: {lost}"
        # At least one re-open against the hung server has timed out (failure 2 of this outage) by now.
        wait_for_attempt(daemon, 2, timeout=max(0.0, paused + 12.0 - time.monotonic()), since=mark)
        sub.wait_for(lambda ms: "reconnecting" in status_states(ms), 5)
        keep_outage_until(daemon, paused + 12.0)
        assert camera.running  # still stopped, not dead: the stall is what the daemon shuts down through
        exit_s = stop_cleanly(daemon)
        stalled_for = time.monotonic() - paused
    finally:
        camera.resume()
    opens = open_durations(retries(daemon, mark))
    print(f"\nstall noticed after {detected_s:.2f} s ({lost['reason']}); re-opens failed after "
          f"{[round(d, 2) for d in opens]} s; SIGTERM → exit in {exit_s:.2f} s; stall lasted {stalled_for:.1f} s")
    assert exit_s <= SHUTDOWN_S, f"exit took {exit_s:.2f} s, over the {SHUTDOWN_S} s shutdown deadline"
    assert stalled_for <= 20.0
    assert opens and all(d <= OPEN_TIMEOUT_S + 1.0 for d in opens), opens
    assert not crash_records(daemon), crash_records(daemon)
    final = sub.wait_for(lambda ms: ms[-1].json()["state"] == "offline", 5)[-1].json()
    assert final["reason"] == "shutdown", final


# -- 3. black hole and garbage ----------------------------------------------------------------------------

HOSTILE_OPEN_TIMEOUT_S = 1.0
EARLY_ATTEMPT, LATE_ATTEMPT = 3, 20
# Slack for the resource comparison; see the test's docstring.
FD_SLACK, THREAD_SLACK = 1, 0


@pytest.mark.parametrize("peer", ["black_hole", "garbage_server"])
def test_a_camera_port_that_hangs_or_talks_garbage_is_retried_without_leaking(
    peer: str,
    request: pytest.FixtureRequest,
    mosquitto: Mosquitto,
    daemon_factory: Callable[..., DaemonProcess],
    daemon_env: EnvFactory,
) -> None:
    """Given rtsp://127.0.0.1:PORT/cam served by a black hole (accepts, never answers) or a garbage server
    (answers bytes that are no RTSP), each open fails within its 1 s deadline, is retried with backoff and
    logged with a reason, and the daemon's thread and fd counts after attempt 20 equal those after attempt 3.

    Counts are sampled right after a `camera_retry` record, while the capture thread waits out its backoff
    with no socket open. The slack of one fd covers the one case where the sample lands after the next
    attempt already connected (its socket is open); threads get no slack.
    """
    server = request.getfixturevalue(peer)
    url = f"rtsp://127.0.0.1:{server.port}/cam"
    env = camera_env(daemon_env, url, mosquitto.url, open_timeout_s=str(HOSTILE_OPEN_TIMEOUT_S),
                     read_timeout_s="1", backoff_initial_s="0.1", backoff_max_s="0.25")
    daemon = daemon_factory(env)
    first = daemon.wait_for_event("camera_state", BOOT_S, state="reconnecting")
    assert f"within the 1 s open timeout on rtsp {url}" in first["reason"], first

    wait_for_attempt(daemon, EARLY_ATTEMPT, 30)
    early = thread_count(daemon.pid), fd_count(daemon.pid)
    wait_for_attempt(daemon, LATE_ATTEMPT, 60)
    late = thread_count(daemon.pid), fd_count(daemon.pid)

    records = retries(daemon)[:LATE_ATTEMPT]
    opens = open_durations(records)
    print(f"\n{peer}: threads {early[0]} → {late[0]}, fds {early[1]} → {late[1]}; "
          f"{server.connections_accepted} connections; opens took {min(opens):.2f}–{max(opens):.2f} s; "
          f"reason: {first['reason']}")
    assert [r["attempts"] for r in records] == list(range(1, LATE_ATTEMPT + 1))
    assert all(r["reason"] == first["reason"] for r in records), {r["reason"] for r in records}
    assert all(d <= HOSTILE_OPEN_TIMEOUT_S + 0.5 for d in opens), opens
    assert all(0 < r["delay_s"] <= 0.25 for r in records)
    assert server.connections_accepted >= LATE_ATTEMPT
    assert late[0] <= early[0] + THREAD_SLACK, f"threads grew {early[0]} → {late[0]}"
    assert late[1] <= early[1] + FD_SLACK, f"file descriptors grew {early[1]} → {late[1]}"
    stop_cleanly(daemon)
    assert not crash_records(daemon), crash_records(daemon)


# -- 4. resolution change ---------------------------------------------------------------------------------


def test_a_camera_that_comes_back_at_another_resolution_keeps_producing_events_of_the_new_size(
    mosquitto: Mosquitto,
    run_weights_sha256: str,
    rtsp_factory: Callable[..., RtspServer],
    subscriber_factory: Callable[..., Subscriber],
    daemon_factory: Callable[..., DaemonProcess],
    daemon_env: EnvFactory,
    line_video: Path,
    model_path: Path,
) -> None:
    """Given a 640x480 RTSP camera, when it restarts at 800x600, then events continue, carry the new
    `image` size (detections inside it), seq stays gapless, and the daemon neither crashes nor stops."""
    camera = rtsp_factory(file=line_video, width=640, height=480, fps=10)
    sub = subscriber_factory(mosquitto.host, mosquitto.port, [f"linewatch/{CAM}/#"])
    daemon = daemon_factory(rtsp_env(daemon_env, camera.url, mosquitto.url))
    daemon.wait_for_event("camera_state", BOOT_S, state="online")
    sub.wait_for(has_defect, EVENTS_S)

    camera.restart(width=800, height=600)
    back = time.monotonic()

    def new_size(messages: list[Message]) -> bool:
        return any(m.json()["image"] == {"width": 800, "height": 600} for m in messages
                   if m.topic.endswith("/defects"))

    sub.wait_for(new_size, 30)
    print(f"\nfirst 800x600 event {time.monotonic() - back:.2f} s after the restart")
    assert daemon.returncode is None, daemon.describe()
    stop_cleanly(daemon)

    events = [m.json() for m in sub.messages("/defects")]
    sizes = [(e["image"]["width"], e["image"]["height"]) for e in events]
    switch = sizes.index((800, 600))
    assert set(sizes[:switch]) == {(640, 480)} and set(sizes[switch:]) == {(800, 600)}, sizes
    sha = run_weights_sha256
    for event, (width, height) in zip(events, sizes, strict=True):
        assert_valid_defect_event(event, camera_id=CAM, model_sha256=sha, width=width, height=height,
                                  labels=set(CLASS_NAMES))
    assert_gapless([e["seq"] for e in events])
    assert not crash_records(daemon), crash_records(daemon)


# -- 5. missing device ------------------------------------------------------------------------------------

MISSING_DEVICE = "/dev/video9"


def _require_absent_device() -> None:
    if Path(MISSING_DEVICE).exists():
        pytest.skip(f"{MISSING_DEVICE} exists here; this test needs it absent")


def test_a_missing_v4l2_device_exits_with_the_camera_code_and_names_the_device(
    mosquitto: Mosquitto,
    daemon_factory: Callable[..., DaemonProcess],
    daemon_env: EnvFactory,
) -> None:
    """Given LINEWATCH_CAMERA__URL=/dev/video9 that does not exist, the daemon exits with code 4
    (ExitCode.CAMERA) and logs a line naming /dev/video9.

    No V4L2 device node can exist on this machine (no /dev/video*, no v4l2loopback), so the V4L2 source is
    tested through its error handling for a missing device; opening a real device is not covered here."""
    _require_absent_device()
    daemon = daemon_factory(camera_env(daemon_env, MISSING_DEVICE, mosquitto.url))
    code = daemon.wait(timeout=BOOT_S)
    assert code == ExitCode.CAMERA, daemon.describe()
    fatal = [r for r in daemon.logs if r.get("level") in ("error", "critical") and MISSING_DEVICE in str(r)]
    assert fatal, f"no error line names {MISSING_DEVICE}\n{daemon.describe()}"
    assert "does not exist" in str(fatal[0]), fatal[0]


def test_a_missing_v4l2_device_is_waited_for_when_asked_and_sigterm_exits_cleanly(
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., Subscriber],
    daemon_factory: Callable[..., DaemonProcess],
    daemon_env: EnvFactory,
) -> None:
    """Given /dev/video9 absent and LINEWATCH_CAMERA__WAIT_FOR_DEVICE=true, the daemon stays up retrying
    (status `reconnecting`, several attempts) and exits 0 on SIGTERM.

    No V4L2 device node can exist on this machine, so this is the missing-device error path only; a
    device appearing later is not covered."""
    _require_absent_device()
    sub = subscriber_factory(mosquitto.host, mosquitto.port, [f"linewatch/{CAM}/status"])
    env = camera_env(daemon_env, MISSING_DEVICE, mosquitto.url, wait_for_device="true",
                     backoff_initial_s="0.2", backoff_max_s="0.5")
    daemon = daemon_factory(env)
    state = daemon.wait_for_event("camera_state", BOOT_S, state="reconnecting")
    assert MISSING_DEVICE in state["reason"], state
    wait_for_attempt(daemon, 5, 30)
    assert daemon.returncode is None, daemon.describe()
    status = sub.wait_for(lambda ms: any(m.json()["state"] == "reconnecting" for m in ms), 10)
    reconnecting = next(m.json() for m in status if m.json()["state"] == "reconnecting")
    assert MISSING_DEVICE in reconnecting["reason"], reconnecting
    exit_s = stop_cleanly(daemon)
    assert exit_s <= SHUTDOWN_S
    assert not [r for r in daemon.logs if r.get("event") == "camera_fatal"]


# -- 6. stuck-capture watchdog ----------------------------------------------------------------------------


class ReadBlocksUntilReleased:
    """A FrameSource whose read() blocks on an Event, standing in for a native read that never returns.

    This fake is the point of the test: a real OpenCV/FFmpeg call cannot be made to hang on demand and then
    be released. Everything it drives is real: the CaptureStage thread, its `native_call_since` bookkeeping
    and the StallWatchdog that reads it.
    """

    description = "read blocks until released (test source)"
    pace_fps: float | None = None

    def __init__(self) -> None:
        self.in_read = threading.Event()
        self.release = threading.Event()

    def open(self) -> None:
        pass

    def read(self) -> Image | None:
        self.in_read.set()
        self.release.wait(30)
        return None  # end of stream: the stage ends on its own

    def close(self) -> None:
        pass


def test_the_watchdog_reports_a_capture_stuck_in_a_native_call_only_after_its_limit() -> None:
    stop = threading.Event()
    frames: Handoff[Frame] = Handoff("frames:wd", 2, DropPolicy.LATEST, stop)
    statuses: list[CameraStatus] = []
    source = ReadBlocksUntilReleased()
    capture = CaptureStage("wd", source, frames, stop, backoff=Backoff(0.1, 0.2), stall_timeout_s=5.0,
                           on_status=statuses.append)
    watchdog = StallWatchdog(capture, limit_s=8.0)
    assert watchdog.check() is None  # not started: no native call
    capture.start()
    try:
        assert source.in_read.wait(10), "the capture thread never reached read()"
        since = capture.native_call_since
        assert since is not None
        assert watchdog.check(now=since + 7.9) is None
        reason = watchdog.check(now=since + 8.0)
        assert reason is not None and "stuck in a native call for 8.0 s" in reason, reason
        assert watchdog.check(now=since + 60.0) is not None
    finally:
        source.release.set()
        stop.set()
        assert capture.join(5), "the capture thread did not end"
    assert capture.native_call_since is None
    assert watchdog.check(now=since + 60.0) is None  # the call returned: nothing is stuck any more
    assert [s.state for s in statuses] == [CameraState.ONLINE, CameraState.OFFLINE]
