"""Configuration: every wrong value exits 2 and names its variable; good values load once, secrets masked."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.exitcodes import ExitCode
from daemon.settings import ConfigError, broker_address, load_settings
from daemon.sources.url import SourceKind, parse_camera_url

REPO_ROOT = Path(__file__).resolve().parents[2]


def linewatch(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": "/usr/bin:/bin", "YOLO_OFFLINE": "1", "HOME": str(Path.home()), **env}
    return subprocess.run([sys.executable, "-m", "daemon", *args], env=clean, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def valid_env(model_path: Path, line_video: Path, tmp_path: Path) -> dict[str, str]:
    return {
        "LINEWATCH_CAMERA__URL": str(line_video),
        "LINEWATCH_MODEL__PATH": str(model_path),
        "LINEWATCH_MQTT__URL": "mqtt://127.0.0.1:1",
        "LINEWATCH_OUTBOX__DIR": str(tmp_path / "state"),
    }


BAD_VALUES = {
    "bad URL scheme": ("LINEWATCH_CAMERA__URL", "http://camera.local/stream", "accepted: rtsp://"),
    "negative imgsz": ("LINEWATCH_MODEL__IMGSZ", "-640", "greater than or equal to 32"),
    "unknown device": ("LINEWATCH_MODEL__DEVICE", "tpu0", "accepted: auto, cpu, cuda, cuda:N"),
    "no streams": ("LINEWATCH_MODEL__STREAMS", "0", "greater than or equal to 1"),
    "missing model file": ("LINEWATCH_MODEL__PATH", "/nonexistent/model.pt", "no model file"),
    "missing password file": ("LINEWATCH_MQTT__PASSWORD_FILE", "/nonexistent/secret", "cannot read"),
    "password file is a directory": ("LINEWATCH_MQTT__PASSWORD_FILE", "/", "is a directory"),
    "unknown variable": ("LINEWATCH_MQTT__TOPIC_PREFX", "x", "did you mean LINEWATCH_MQTT__TOPIC_PREFIX"),
    "bad broker URL": ("LINEWATCH_MQTT__URL", "tcp://broker", "accepted: mqtt://host[:port]"),
    "QoS zero": ("LINEWATCH_MQTT__QOS", "0", "greater than or equal to 1"),
    "class threshold above 1": ("LINEWATCH_RULES__CLASSES__SCRATCH__MIN_CONFIDENCE", "1.5", "less than or equal to 1"),
    "ROI that is not JSON": ("LINEWATCH_RULES__ROI__INCLUDE", "[[0, 1]", "not valid JSON"),
    "ROI polygon of two points": ("LINEWATCH_RULES__ROI__EXCLUDE", "[[[0, 0], [1, 0]]]", "a polygon has 3 to"),
    "rules inline JSON broken": ("LINEWATCH_RULES__INLINE", "{classes: 1}", "not valid JSON"),
    "rules file missing": ("LINEWATCH_RULES__FILE", "/nonexistent/rules.json", "cannot read"),
    "K above M": ("LINEWATCH_EVENTS__CONFIRM_HITS", "9", "could never be confirmed"),
    # Found in review: the client id names the availability topic; '+' made paho refuse it at the first connect.
    "client id not a topic level": ("LINEWATCH_MQTT__CLIENT_ID", "line+1", "not usable as a topic level"),
    "class rule field typo": ("LINEWATCH_RULES__CLASSES__DENT__MIN_AREA", "10", "did you mean"),
    "job region upside down": ("LINEWATCH_JOBS__ROI", "0.5,0.5,0.2,0.9", "x1 < x2"),
    "job region not numbers": ("LINEWATCH_JOBS__ROI", "left half", "four fractions"),
    "job with no window": ("LINEWATCH_JOBS__FRAMES", "0", "a job needs a window"),
    "PLC without jobs": ("LINEWATCH_MODBUS__ENABLED", "true", "no camera has inspection jobs"),
    "OPC UA endpoint not opc.tcp": ("LINEWATCH_OPCUA__ENDPOINT", "http://0.0.0.0:4840/", "opc.tcp://<host>:<port>"),
    "OPC UA signing without a certificate": ("LINEWATCH_OPCUA__SECURITY", "sign", "CERTIFICATE_FILE"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_a_wrong_setting_exits_2_naming_the_variable_without_a_traceback(case: str,
                                                                          valid_env: dict[str, str]) -> None:
    variable, value, hint = BAD_VALUES[case]
    assert_one_problem(linewatch(["run"], {**valid_env, variable: value}), f"{variable}:", hint)


def assert_one_problem(result: subprocess.CompletedProcess[str], starts: str, hint: str) -> None:
    """Exit 2 with exactly one line, `config error: <starts>…`, that says `hint`; never a traceback."""
    assert result.returncode == ExitCode.CONFIG, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected exactly one problem line, got: {lines}"
    assert lines[0].startswith(f"config error: {starts}"), lines[0]
    assert hint.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.slow
def test_every_problem_is_reported_at_once(valid_env: dict[str, str]) -> None:
    env = {**valid_env, "LINEWATCH_MODEL__DEVICE": "tpu", "LINEWATCH_MODEL__CONFIDENCE": "1.5",
           "LINEWATCH_LOG__LEVEL": "loud"}
    result = linewatch(["check-config"], env)
    assert result.returncode == ExitCode.CONFIG
    named = sorted(line.split(":")[1].strip() for line in result.stderr.strip().splitlines())
    assert named == ["LINEWATCH_LOG__LEVEL", "LINEWATCH_MODEL__CONFIDENCE", "LINEWATCH_MODEL__DEVICE"]


@pytest.mark.slow
def test_a_missing_camera_url_is_named(valid_env: dict[str, str]) -> None:
    env = {k: v for k, v in valid_env.items() if k != "LINEWATCH_CAMERA__URL"}
    result = linewatch(["check-config"], env)
    assert result.returncode == ExitCode.CONFIG
    assert "LINEWATCH_CAMERA__URL: required but not set" in result.stderr


@pytest.mark.slow
def test_check_config_prints_effective_settings_with_the_password_masked(valid_env: dict[str, str],
                                                                         tmp_path: Path) -> None:
    result = linewatch(["check-config"], {**valid_env, "LINEWATCH_MQTT__PASSWORD": "hunter2-secret",
                                          "LINEWATCH_MQTT__USERNAME": "line1"})
    assert result.returncode == ExitCode.OK, result.stderr
    view = json.loads(result.stdout)
    assert view["LINEWATCH_MQTT__PASSWORD"] == "********"
    assert view["LINEWATCH_MQTT__USERNAME"] == "line1"
    assert view["LINEWATCH_MQTT__QOS"] == 1
    assert view["(effective) LINEWATCH_CAMERA id"] == "line"
    assert "hunter2-secret" not in result.stdout + result.stderr


@pytest.mark.slow
def test_env_file_is_read_and_the_environment_wins_over_it(valid_env: dict[str, str], tmp_path: Path) -> None:
    env_file = tmp_path / "linewatch.env"
    env_file.write_text("LINEWATCH_MQTT__TOPIC_PREFIX=plant7/line2\nLINEWATCH_MODEL__CONFIDENCE=0.7\n")
    result = linewatch(["check-config"], {**valid_env, "LINEWATCH_ENV_FILE": str(env_file),
                                          "LINEWATCH_MODEL__CONFIDENCE": "0.6"})
    assert result.returncode == ExitCode.OK, result.stderr
    view = json.loads(result.stdout)
    assert view["LINEWATCH_MQTT__TOPIC_PREFIX"] == "plant7/line2"
    assert view["LINEWATCH_MODEL__CONFIDENCE"] == 0.6


@pytest.mark.slow
def test_a_typo_inside_the_env_file_is_reported(valid_env: dict[str, str], tmp_path: Path) -> None:
    env_file = tmp_path / "linewatch.env"
    env_file.write_text("LINEWATCH_CAMERA__FSP=30\n")
    result = linewatch(["check-config"], {**valid_env, "LINEWATCH_ENV_FILE": str(env_file)})
    assert result.returncode == ExitCode.CONFIG
    assert f"LINEWATCH_CAMERA__FSP: unknown variable in {env_file}" in result.stderr


def test_password_file_is_read_at_use_so_a_rotated_secret_is_picked_up(
    valid_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "mqtt_password"
    secret.write_text("first\n")
    for name, value in {**valid_env, "LINEWATCH_MQTT__PASSWORD_FILE": str(secret)}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.mqtt.password_value() == "first"
    secret.write_text("second\n")
    assert settings.mqtt.password_value() == "second"


def test_load_settings_raises_config_error_not_validation_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINEWATCH_CAMERA__URL", "ftp://x")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert any(p.startswith("LINEWATCH_CAMERA__URL:") for p in caught.value.problems)


GENICAM_MISTAKES = {
    "trigger on an RTSP camera": ({"URL": "rtsp://cam/x", "TRIGGER": "software"}, "LINEWATCH_CAMERA__TRIGGER",
                                  "only a genicam:// camera"),
    "software trigger without jobs": ({"URL": "genicam://A1", "TRIGGER": "software"}, "",
                                      "TRIGGER=software: the camera is fired once per inspection job"),
    "pixel format unknown": ({"URL": "genicam://A1", "PIXEL_FORMAT": "Mono9"}, "LINEWATCH_CAMERA__PIXEL_FORMAT",
                             "accepted: Mono8"),
    "trigger line not a word": ({"URL": "genicam://A1", "TRIGGER_SOURCE": "Line0; rm"},
                                "LINEWATCH_CAMERA__TRIGGER_SOURCE", "should match pattern"),
    "packet size below Ethernet's minimum": ({"URL": "genicam://A1", "PACKET_SIZE": "100"},
                                             "LINEWATCH_CAMERA__PACKET_SIZE", "greater than or equal to 576"),
    "selector with a path": ({"URL": "genicam://A1/x"}, "LINEWATCH_CAMERA__URL", "named by its serial number"),
    "selector with credentials": ({"URL": "genicam://u:secret@A1"}, "LINEWATCH_CAMERA__URL", "named by its serial"),
}


@pytest.mark.parametrize("case", sorted(GENICAM_MISTAKES))
def test_a_genicam_setting_that_cannot_work_is_named(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    camera, variable, hint = GENICAM_MISTAKES[case]
    for key, value in camera.items():
        monkeypatch.setenv(f"LINEWATCH_CAMERA__{key}", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert any(p.startswith(variable) and hint in p for p in caught.value.problems), caught.value.problems


TILE_MISTAKES = {
    "overlap of a whole tile": ({"LINEWATCH_CAMERA__TILES__OVERLAP": "1"}, "LINEWATCH_CAMERA__TILES__OVERLAP",
                                "less than or equal to 0.75"),
    "tiles as a number": ({"LINEWATCH_CAMERA__TILES": "1"}, "LINEWATCH_CAMERA__TILES", "valid dictionary"),
    "an unknown tile key": ({"LINEWATCH_CAMERAS__A__URL": "synthetic://line",
                             "LINEWATCH_CAMERAS__A__TILES": '{"sizes": 320}'}, "LINEWATCH_CAMERAS__A__TILES__SIZES",
                            "did you mean"),
    "no tiles per batch": ({"LINEWATCH_CAMERA__TILES__PER_BATCH": "0"}, "LINEWATCH_CAMERA__TILES__PER_BATCH",
                           "greater than or equal to 1"),
    "a line moving backwards": ({"LINEWATCH_CAMERA__MOTION_PX": "-40"}, "LINEWATCH_CAMERA__MOTION_PX",
                                "greater than or equal to 0"),
    "a line moving nan pixels": ({"LINEWATCH_CAMERAS__A__URL": "synthetic://line",
                                  "LINEWATCH_CAMERAS__A__MOTION_PX": "nan"}, "LINEWATCH_CAMERAS__A__MOTION_PX",
                                 "a finite number"),
}


@pytest.mark.parametrize("case", sorted(TILE_MISTAKES))
def test_a_tile_setting_that_cannot_work_is_named(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    variables, variable, hint = TILE_MISTAKES[case]
    if not any(name.startswith("LINEWATCH_CAMERAS__") for name in variables):
        monkeypatch.setenv("LINEWATCH_CAMERA__URL", "synthetic://line")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert any(p.startswith(variable) and hint in p for p in caught.value.problems), caught.value.problems


@pytest.mark.parametrize("content", [b"", b"\xff\xfe-not-utf8\n", b"two words\n", b"line1\nline2\n"],
                         ids=["empty", "not UTF-8", "a space", "two lines"])
def test_a_detect_token_file_that_holds_no_bearer_token_is_named_without_printing_it(
        content: bytes, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    token = tmp_path / "detect.token"
    token.write_bytes(content)
    monkeypatch.setenv("LINEWATCH_CAMERA__URL", "synthetic://line")
    monkeypatch.setenv("LINEWATCH_HTTP__DETECT_TOKEN_FILE", str(token))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    problems = caught.value.problems
    assert len(problems) == 1 and problems[0].startswith("LINEWATCH_HTTP__DETECT_TOKEN_FILE")
    assert all(word not in problems[0] for word in ("words", "line1", "not-utf8"))


def test_tiles_are_off_unless_set_and_set_whole_or_field_by_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINEWATCH_CAMERAS__A__URL", "synthetic://line")
    monkeypatch.setenv("LINEWATCH_CAMERAS__B__URL", "synthetic://line?seed=2")
    monkeypatch.setenv("LINEWATCH_CAMERAS__B__TILES", '{"full_frame": true}')
    monkeypatch.setenv("LINEWATCH_CAMERAS__C__URL", "synthetic://line?seed=3")
    monkeypatch.setenv("LINEWATCH_CAMERAS__C__TILES__SIZE", "640")
    cameras = {c.camera_id: c.camera for c in load_settings().camera_configs}
    assert cameras["a"].tiles is None
    assert cameras["b"].tiles is not None and cameras["b"].tiles.full_frame and cameras["b"].tiles.size is None
    assert cameras["c"].tiles is not None and cameras["c"].tiles.size == 640 and cameras["c"].tiles.overlap == 0.2


@pytest.mark.parametrize(
    ("url", "kind", "camera_id"),
    [
        ("rtsp://admin:pw@10.1.2.3:8554/line1/cam2", SourceKind.RTSP, "10.1.2.3-8554-line1-cam2"),
        ("/dev/video0", SourceKind.V4L2, "video0"),
        ("v4l2:///dev/video2", SourceKind.V4L2, "video2"),
        ("synthetic://line?seed=3", SourceKind.SYNTHETIC, "synthetic-line"),
        ("gst://videotestsrc ! videoconvert ! appsink", SourceKind.GSTREAMER, "gst"),
        ("genicam://", SourceKind.GENICAM, "genicam"),
        ("genicam://22179934", SourceKind.GENICAM, "genicam-22179934"),
        ("genicam://192.168.10.21", SourceKind.GENICAM, "genicam-192.168.10.21"),
    ],
)
def test_camera_urls_are_classified_with_a_stable_credential_free_id(url: str, kind: SourceKind,
                                                                     camera_id: str) -> None:
    parsed = parse_camera_url(url)
    assert parsed.kind is kind
    assert parsed.default_id == camera_id
    assert "pw" not in parsed.default_id


def test_a_video_file_is_accepted_as_a_path_or_a_file_url(line_video: Path) -> None:
    assert parse_camera_url(str(line_video)).kind is SourceKind.FILE
    assert parse_camera_url(f"file://{line_video}").target == str(line_video)


def test_broker_urls() -> None:
    assert broker_address("mqtt://broker.local") == ("broker.local", 1883, False)
    assert broker_address("mqtts://broker.local") == ("broker.local", 8883, True)
    assert broker_address("mqtt://[::1]:1884") == ("::1", 1884, False)
    with pytest.raises(ValueError, match="accepted"):
        broker_address("http://broker")


@pytest.mark.slow
def test_the_example_env_file_uses_only_known_variables() -> None:
    example = REPO_ROOT / "config" / "linewatch.env.example"
    result = linewatch(["check-config"], {"LINEWATCH_ENV_FILE": str(example)})
    # Its paths (model, secrets, CA) point at a target system, so only those may be reported here.
    for line in result.stderr.strip().splitlines():
        assert "unknown variable" not in line, line
        assert line.split(":")[1].strip() in {"LINEWATCH_MODEL__PATH", "LINEWATCH_MQTT__PASSWORD_FILE",
                                               "LINEWATCH_MQTT__TLS_CA_FILE"}, line


CREDENTIAL_VARIABLES = ("LINEWATCH_MQTT__TLS_CERT_FILE", "LINEWATCH_MQTT__TLS_CA_FILE", "LINEWATCH_MQTT__PASSWORD_FILE")


@pytest.fixture
def not_a_credential(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, str]:
    """(path, what the error must say) for each kind of file a credential must not be."""
    kind = request.param
    if kind == "device":
        return "/dev/zero", "is a device"
    if kind == "fifo":
        fifo = tmp_path / "secret.fifo"
        os.mkfifo(fifo)  # opening it for reading would block until a writer came
        return str(fifo), "is a FIFO"
    if kind == "directory":
        return str(tmp_path), "is a directory"
    big = tmp_path / "big.pem"
    with big.open("wb") as handle:
        handle.truncate(1024**3)  # 1 GB, sparse: costs no disk
    return str(big), "at most 1024 KiB"


@pytest.mark.slow
@pytest.mark.parametrize("not_a_credential", ["device", "fifo", "directory", "1 GB file"], indirect=True)
@pytest.mark.parametrize("variable", CREDENTIAL_VARIABLES)
def test_a_credential_path_that_is_not_a_small_regular_file_exits_2_naming_the_variable(
    variable: str, not_a_credential: tuple[str, str], valid_env: dict[str, str]
) -> None:
    """Before the fix, /dev/zero was read until the kernel killed check-config, and a FIFO hung it."""
    path, says = not_a_credential

    def cap_memory() -> None:  # as the report did: a 3 GB limit turns the old unbounded read into a MemoryError
        resource.setrlimit(resource.RLIMIT_AS, (3 * 1024**3, 3 * 1024**3))

    clean = {"PATH": "/usr/bin:/bin", "YOLO_OFFLINE": "1", "HOME": str(Path.home()), **valid_env, variable: path}
    result = subprocess.run([sys.executable, "-m", "daemon", "check-config"], env=clean, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=30, preexec_fn=cap_memory)
    assert result.returncode == ExitCode.CONFIG, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith(f"config error: {variable}:"), lines
    assert says in lines[0], lines[0]


@pytest.mark.slow
def test_a_rule_for_a_class_the_model_does_not_have_exits_2_once_the_model_is_loaded(
    valid_env: dict[str, str]
) -> None:
    # Only the loaded model knows its classes, so this is found after start-up; it still exits 2 with one line.
    result = linewatch(["run"], {**valid_env, "LINEWATCH_RULES__CLASSES__CRACK__MIN_CONFIDENCE": "0.8",
                                 "LINEWATCH_HTTP__ENABLED": "false"})
    assert result.returncode == ExitCode.CONFIG, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "config error: LINEWATCH_RULES__CLASSES__CRACK: unknown class 'crack'; the model's classes: scratch, dent, "
        "stain, missing_component"
    ], lines


# Several cameras: each case is (variables replacing LINEWATCH_CAMERA__URL, the line's variable, what it says).
BAD_CAMERA_LISTS = {
    "bad URL of one camera": ({"LINEWATCH_CAMERAS__A__URL": "synthetic://line",
                               "LINEWATCH_CAMERAS__B__URL": "htp://x/y"}, "LINEWATCH_CAMERAS__B__URL", "unsupported"),
    "camera without a URL": ({"LINEWATCH_CAMERAS__A__URL": "synthetic://line",
                              "LINEWATCH_CAMERAS__B__RTSP_TRANSPORT": "udp"},
                             "LINEWATCH_CAMERAS__B__URL", "required but not set"),
    "field typo": ({"LINEWATCH_CAMERAS__A__URL": "synthetic://line", "LINEWATCH_CAMERAS__A__URLL": "x"},
                   "LINEWATCH_CAMERAS__A__URLL", "did you mean"),
    "bad value of one camera": ({"LINEWATCH_CAMERAS__A__URL": "synthetic://line",
                                 "LINEWATCH_CAMERAS__A__READ_TIMEOUT_S": "-1"},
                                "LINEWATCH_CAMERAS__A__READ_TIMEOUT_S", "greater than 0"),
    "two cameras, one id": ({"LINEWATCH_CAMERAS__A__URL": "synthetic://line",
                             "LINEWATCH_CAMERAS__B__URL": "synthetic://line?seed=2", "LINEWATCH_CAMERAS__B__ID": "a"},
                            "LINEWATCH_CAMERAS__A", "same camera id 'a'"),
    "reserved id": ({"LINEWATCH_CAMERAS___DAEMON__URL": "synthetic://line"}, "LINEWATCH_CAMERAS___DAEMON__*",
                    "reserved"),
    "reserved id in capitals": ({"LINEWATCH_CAMERAS__A__URL": "synthetic://line",
                                 "LINEWATCH_CAMERAS__A__ID": "_DAEMON"}, "LINEWATCH_CAMERAS__A__ID", "reserved"),
    "ids that differ only in case": ({"LINEWATCH_CAMERAS__A__URL": "synthetic://line",
                                      "LINEWATCH_CAMERAS__B__URL": "synthetic://line?seed=2",
                                      "LINEWATCH_CAMERAS__B__ID": "A"}, "LINEWATCH_CAMERAS__B and", "same camera id"),
    "both forms": ({"LINEWATCH_CAMERA__URL": "synthetic://line", "LINEWATCH_CAMERAS__A__URL": "synthetic://line"},
                   "LINEWATCH_CAMERA__* and LINEWATCH_CAMERAS__<ID>__* are both set", "use one form"),
    "no camera at all": ({}, "LINEWATCH_CAMERA__URL", "required but not set"),
    "broken JSON list": ({"LINEWATCH_CAMERAS": '{"a": {"url": "synthetic://line"}'}, "LINEWATCH_CAMERAS",
                         "not valid JSON"),
    "a camera's rule": ({"LINEWATCH_CAMERAS__A__URL": "synthetic://line",
                         "LINEWATCH_CAMERAS__A__RULES__MIN_CONFIDENCE": "2"},
                        "LINEWATCH_CAMERAS__A__RULES__MIN_CONFIDENCE", "less than or equal to 1"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_CAMERA_LISTS))
def test_a_malformed_camera_list_exits_2_naming_the_camera_and_the_variable(case: str,
                                                                            valid_env: dict[str, str]) -> None:
    cameras, variable, hint = BAD_CAMERA_LISTS[case]
    env = {k: v for k, v in valid_env.items() if k != "LINEWATCH_CAMERA__URL"}
    assert_one_problem(linewatch(["check-config"], {**env, **cameras}), variable, hint)


def test_several_cameras_each_with_its_id_url_settings_and_rules(monkeypatch: pytest.MonkeyPatch,
                                                                  model_path: Path) -> None:
    for name in [n for n in os.environ if n.startswith("LINEWATCH_")]:
        monkeypatch.delenv(name)
    env = {"LINEWATCH_MODEL__PATH": str(model_path),
           "LINEWATCH_CAMERAS__PRESS2__URL": "rtsp://10.1.2.4:8554/p2",
           "LINEWATCH_CAMERAS__PRESS2__RTSP_TRANSPORT": "udp",
           "LINEWATCH_CAMERAS__PRESS1__URL": "synthetic://line?fps=5",
           "LINEWATCH_CAMERAS__PRESS1__ID": "Press-1",
           "LINEWATCH_CAMERAS__PRESS1__RULES__CLASSES__STAIN__IGNORE": "true",
           "LINEWATCH_RULES__MIN_CONFIDENCE": "0.8"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(env)
    configs = settings.camera_configs
    assert [c.camera_id for c in configs] == ["Press-1", "press2"]  # in id order; <ID> lower-cased unless ID is set
    press1, press2 = configs
    assert press1.camera.source.kind is SourceKind.SYNTHETIC and press2.camera.rtsp_transport == "udp"
    assert press1.rules.classes["stain"].ignore and press1.rules.min_confidence == 0.7  # its own rules, defaults
    assert press2.rules.min_confidence == 0.8 and not press2.rules.classes  # the global rules
    host = socket.gethostname()
    assert settings.mqtt_client_id == f"linewatch-{host}-Press-1-press2"[:64] or len(settings.mqtt_client_id) == 64
    assert settings.unknown_classes(("scratch", "dent")) == [
        "LINEWATCH_CAMERAS__PRESS1__RULES__CLASSES__STAIN: unknown class 'stain'; the model's classes: scratch, dent"]


def test_a_json_camera_map_and_camera_variables_name_the_same_camera_whatever_the_case(
        monkeypatch: pytest.MonkeyPatch, model_path: Path) -> None:
    # Found in review: JSON keys kept their case while variables' <ID> arrive lower-cased: two cameras from one.
    for name in [n for n in os.environ if n.startswith("LINEWATCH_")]:
        monkeypatch.delenv(name)
    env = {"LINEWATCH_MODEL__PATH": str(model_path), "LINEWATCH_CAMERAS": '{"Cam1": {"url": "synthetic://line"}}',
           "LINEWATCH_CAMERAS__CAM1__RTSP_TRANSPORT": "udp"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    (only,) = load_settings(env).camera_configs
    assert only.camera_id == "cam1" and only.camera.rtsp_transport == "udp" and only.camera.url == "synthetic://line"


def numeric_fields() -> list[tuple[str, object]]:
    """(variable, field) for every int or float setting in the model, sections and maps walked."""
    from daemon.settings import ANY_NAME, Settings, env_name
    from daemon.settings.base import nested_model

    found: list[tuple[str, object]] = []

    def walk(model: type, loc: tuple[str, ...]) -> None:
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            sub, is_map = nested_model(field.annotation)
            if sub is not None:
                walk(sub, (*loc, name, ANY_NAME) if is_map else (*loc, name))
            elif {int, float} & {field.annotation, *getattr(field.annotation, "__args__", ())}:
                found.append((env_name((*loc, name)), field))

    walk(Settings, ())
    return found


def test_every_numeric_setting_has_a_lower_and_an_upper_bound() -> None:
    """No figure is unbounded: an `inf`, a `1e308` or a 20-digit integer cannot pass and overflow later."""
    unbounded = []
    for variable, field in numeric_fields():
        kinds = {type(m).__name__ for m in field.metadata}  # type: ignore[attr-defined]
        if not ({"Ge", "Gt"} & kinds and {"Le", "Lt"} & kinds):
            unbounded.append(variable)
    assert not unbounded, unbounded
    assert len(numeric_fields()) > 40


@pytest.mark.slow
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e308", "99999999999999999999"])
def test_no_numeric_setting_takes_an_infinite_or_overflowing_value(value: str, monkeypatch: pytest.MonkeyPatch,
                                                                    valid_env: dict[str, str]) -> None:
    for variable, _ in numeric_fields():
        name = variable.replace("<NAME>", "SCRATCH")
        env = dict(valid_env)
        if "CAMERAS__" in name:
            env = {k: v for k, v in env.items() if k != "LINEWATCH_CAMERA__URL"}
            env[name.split("__SCRATCH__")[0] + "__SCRATCH__URL"] = "synthetic://line"
        with pytest.raises(ConfigError) as caught:
            load_settings({**env, name: value})
        assert caught.value.problems[0].startswith(f"{name}:"), (name, caught.value.problems)
