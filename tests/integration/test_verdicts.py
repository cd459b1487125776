"""Inspection jobs end to end: the daemon as a process, the real model, a real mosquitto; verdicts on MQTT checked
against the JSON Schema and against the synthetic line's ground truth; a camera killed mid-run (a real RTSP server)
never answers pass."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.exitcodes import ExitCode
from daemon.synthetic.line import LineParams, SyntheticLine
from tests.integration.payloads import assert_gapless, validate_message
from tests.support.mosquitto import Mosquitto
from tests.support.procs import DaemonProcess
from tests.support.publisher import publish
from tests.support.rtsp import RtspServer
from tests.support.subscriber import Message, Subscriber

pytestmark = pytest.mark.integration

EnvFactory = Callable[..., dict[str, str]]
FRAMES = 480
LINE = f"synthetic://line?frames={FRAMES}&realtime=false&defect_rate=0.5&seed=41&photo_eye=true"
JOBS = {"LINEWATCH_JOBS__ENABLED": "true", "LINEWATCH_JOBS__FRAMES": "3", "LINEWATCH_JOBS__ROI": "0.25,0,0.75,0.5"}
BOOT_S = 120.0


def verdicts(messages: list[Message]) -> list[dict[str, object]]:
    return [m.json() for m in messages if m.topic.endswith("/verdicts")]


def test_the_photo_eye_gets_one_documented_verdict_per_part_that_matches_the_ground_truth(
    mosquitto: Mosquitto, subscriber_factory: Callable[..., Subscriber],
    daemon_factory: Callable[..., DaemonProcess], daemon_env: EnvFactory,
) -> None:
    # The photo-eye's parts and whether each is defective, from the line's own ground truth
    line = SyntheticLine(LineParams.from_url(LINE))
    eye = {index: part for index in range(FRAMES) if (part := line.photo_eye(index)) is not None}
    truth = {str(part): next(p.defective for p in line.truth(index)[0] if p.part_id == part)
             for index, part in eye.items()}
    complete = {str(part) for index, part in eye.items() if index + 2 < FRAMES}  # its 3 frames are in the stream
    assert len(complete) >= 8 and 0 < sum(truth[p] for p in complete) < len(complete)
    sub = subscriber_factory(mosquitto.host, mosquitto.port, ["linewatch/+/verdicts", "linewatch/+/snapshots/#"])
    # Generous freshness: frames of a stream read as fast as it goes wait for the model on a shared CPU
    env = daemon_env(LINE, mosquitto.url, LINEWATCH_CAMERA__ID="line", LINEWATCH_JOBS__MAX_FRAME_AGE_MS="30000",
                     LINEWATCH_JOBS__TIMEOUT_MS="60000", LINEWATCH_SNAPSHOTS__MODE="crop", **JOBS)
    daemon = daemon_factory(env)
    assert daemon.wait(timeout=300) == ExitCode.OK, daemon.describe()
    got = verdicts(sub.wait_for(lambda ms: len(verdicts(ms)) >= len(eye), 20))
    # Then one verdict per part the photo-eye saw, numbered without gaps, each as documented
    assert sorted(str(v["part_id"]) for v in got) == sorted(truth), "one verdict per trigger, none twice"
    assert_gapless([int(v["seq"]) for v in got])  # type: ignore[call-overload]
    for verdict in got:
        validate_message("linewatch/line/verdicts", json.dumps(verdict).encode())
        assert verdict["trigger_source"] == "photo_eye"
    by_part = {str(v["part_id"]): v for v in got}
    # and every part whose window is in the stream is judged, and judged right: ng exactly for the defective ones
    judged = {part: by_part[part]["result"] for part in complete}
    assert set(judged.values()) <= {"pass", "ng"}, {p: by_part[p]["reasons"] for p in complete
                                                    if judged[p] == "unknown"}
    wrong = {part: (judged[part], truth[part]) for part in complete if (judged[part] == "ng") != truth[part]}
    assert not wrong, f"{len(wrong)} of {len(complete)} parts judged wrong: {wrong}"
    # A part whose window the stream's end cut short is unknown (stopping), never pass
    for part in set(truth) - complete:
        assert by_part[part]["result"] == "unknown" and by_part[part]["reasons"] == ["stopping"], by_part[part]
    # An ng verdict names the picture of its defect, which follows on its topic; the others name none
    for verdict in got:
        snapshot = verdict["snapshot"]
        assert (snapshot is not None) == (verdict["result"] == "ng"), verdict
    pictures = {v["snapshot"]["crop"]["topic"] for v in got if v["snapshot"]}  # type: ignore[index]
    assert pictures, "some parts were ng"
    sub.wait_for(lambda ms: pictures <= {m.topic for m in ms}, 20)
    summary = daemon.wait_for_event("shutdown_complete", 1)
    assert summary["outbox_pending"] == 0


def test_a_killed_camera_answers_every_trigger_unknown_never_pass_and_each_trigger_gets_one_verdict(
    mosquitto: Mosquitto, rtsp_factory: Callable[..., RtspServer], subscriber_factory: Callable[..., Subscriber],
    daemon_factory: Callable[..., DaemonProcess], daemon_env: EnvFactory, line_video: Path,
) -> None:
    camera = rtsp_factory(file=line_video, width=640, height=480, fps=10)
    sub = subscriber_factory(mosquitto.host, mosquitto.port, ["linewatch/cam1/verdicts"])
    env = daemon_env(camera.url, mosquitto.url, LINEWATCH_CAMERA__ID="cam1", LINEWATCH_CAMERA__READ_TIMEOUT_S="2",
                     LINEWATCH_CAMERA__BACKOFF_MAX_S="1", LINEWATCH_HTTP__TRIGGERS="true",
                     LINEWATCH_JOBS__TIMEOUT_MS="1500", LINEWATCH_JOBS__MAX_DROPPED_FRAMES="2", **JOBS)
    daemon = daemon_factory(env)
    daemon.wait_for_event("daemon_ready", BOOT_S)
    daemon.wait_for_event("camera_state", 30, state="online")
    daemon.wait_for_event("mqtt_subscribed", 30)
    port = int(env["LINEWATCH_HTTP__PORT"])
    sent: list[tuple[str, float]] = []  # (part id, when)

    def trigger(part: str) -> None:
        publish(mosquitto.host, mosquitto.port, "linewatch/cam1/trigger", json.dumps({"part_id": part}))
        sent.append((part, time.monotonic()))

    # An HTTP trigger answers with the job's id at once, and its verdict carries it
    answer = post(port, "/cameras/cam1/trigger", b'{"part_id": "http-1"}')
    assert answer[0] == 202 and answer[1]["part_id"] == "http-1"
    assert post(port, "/cameras/cam1/trigger", b'{"part_id": "\\u0007"}')[0] == 400
    assert post(port, "/cameras/nope/trigger", b"")[0] == 404
    for index in range(5):  # the camera streams: real answers
        trigger(f"before-{index}")
        time.sleep(0.3)  # the PLC's pace: a part every 300 ms
    mark = daemon.mark()
    camera.kill()
    killed = time.monotonic()
    daemon.wait_for_event("camera_state", 10, since=mark, state="reconnecting")
    for index in range(10):  # while it is down
        trigger(f"down-{index}")
        time.sleep(0.3)
    camera.restart()
    daemon.wait_for_event("camera_state", 30, since=mark, state="online")
    back = time.monotonic()
    for index in range(5):
        trigger(f"after-{index}")
        time.sleep(0.3)
    got = verdicts(sub.wait_for(lambda ms: len(verdicts(ms)) >= len(sent) + 1, 30))
    by_part = {str(v["part_id"]): v for v in got}
    assert len(by_part) == len(got) == len(sent) + 1, "one verdict per trigger, none twice"
    assert by_part["http-1"]["job_id"] == answer[1]["job_id"] and by_part["http-1"]["trigger_source"] == "http"
    assert_gapless([int(v["seq"]) for v in got])  # type: ignore[call-overload]
    down = [part for part, at in sent if killed <= at < back]
    assert len(down) >= 8
    assert all(by_part[part]["result"] == "unknown" for part in down), {p: by_part[p]["result"] for p in down}
    assert {r for p in down for r in by_part[p]["reasons"]} <= {  # type: ignore[attr-defined]
        "camera_reconnecting", "camera_stale"}
    assert {by_part[f"before-{i}"]["result"] for i in range(5)} <= {"pass", "ng"}
    assert {by_part[f"after-{i}"]["result"] for i in range(1, 5)} <= {"pass", "ng"}
    for verdict in got:
        validate_message("linewatch/cam1/verdicts", json.dumps(verdict).encode())
    daemon.send_signal(15)
    assert daemon.wait(30) == ExitCode.OK


def post(port: int, path: str, body: bytes) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_retained_trigger_starts_no_job_and_a_live_one_does(
    mosquitto: Mosquitto, subscriber_factory: Callable[..., Subscriber],
    daemon_factory: Callable[..., DaemonProcess], daemon_env: EnvFactory,
) -> None:
    """A retained trigger would start a job at every reconnect, for a part long gone: ignored."""
    publish(mosquitto.host, mosquitto.port, "linewatch/cam1/trigger", json.dumps({"part_id": "stale"}), retain=True)
    sub = subscriber_factory(mosquitto.host, mosquitto.port, ["linewatch/cam1/verdicts"])
    env = daemon_env("synthetic://line?fps=15&seed=5", mosquitto.url, LINEWATCH_CAMERA__ID="cam1", **JOBS)
    daemon = daemon_factory(env)
    daemon.wait_for_event("camera_state", BOOT_S, state="online")
    daemon.wait_for_event("mqtt_subscribed", 30)  # not mqtt_connected: the SUBSCRIBE may not be out yet
    publish(mosquitto.host, mosquitto.port, "linewatch/cam1/trigger", json.dumps({"part_id": "live"}))
    got = verdicts(sub.wait_for(lambda ms: len(verdicts(ms)) >= 1, 30))
    daemon.send_signal(15)
    assert daemon.wait(30) == ExitCode.OK
    assert [v["part_id"] for v in verdicts(sub.messages())] == ["live"], got
