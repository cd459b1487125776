"""Every documented install path, tried as a new user would: a regular `pip install` finds its model, the
example env file means the same to systemd, Docker and linewatch, and the systemd install steps (as the script
systemd/install.sh) set up a service that starts, in a scratch root."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.exitcodes import ExitCode
from daemon.settings import read_env_file
from tests.support.envfiles import docker_env_file, systemd_env_file
from tests.support.net import free_port
from tests.support.procs import DaemonProcess

pytestmark = pytest.mark.slow  # outside the unit tier (pyproject.toml: markers)

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = REPO_ROOT / "config" / "linewatch.env.example"
SITE_PACKAGES = next(Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())


def test_the_example_env_file_means_the_same_to_systemd_docker_and_linewatch() -> None:
    """Before: an active line carried a comment after its value; systemd and Docker kept it in the value
    (`0.25        # the floor…`), so the service exited 2 and stayed down."""
    text = EXAMPLE.read_text()
    ours = read_env_file(EXAMPLE)
    assert systemd_env_file(text) == ours
    assert docker_env_file(text) == ours
    assert ours and not [name for name, value in ours.items() if "#" in value or value != value.strip()]
    assert "LINEWATCH_MQTT__PASSWORD_FILE" not in ours, "it would override the systemd unit's credential"


def test_a_comment_after_a_value_is_refused_by_linewatch_naming_the_line(tmp_path: Path) -> None:
    env_file = tmp_path / "linewatch.env"
    env_file.write_text("LINEWATCH_CAMERA__URL=synthetic://line\nLINEWATCH_MODEL__CONFIDENCE=0.25   # floor\n")
    result = subprocess.run([sys.executable, "-m", "daemon", "check-config"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "LINEWATCH_ENV_FILE": str(env_file),
                                                        "LINEWATCH_OUTBOX__DIR": str(tmp_path)})
    assert result.returncode == ExitCode.CONFIG
    assert "line 2" in result.stderr and "a comment after its value" in result.stderr, result.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """systemd/install.sh run into a scratch root, as root would run it into /. pip is told --no-deps and the
    dependencies are the ones this test runs with, on PYTHONPATH (five GB of torch need not be installed again
    to show that the steps work; linewatch itself is the venv's own, from a regular install); everything else is
    the script's own doing."""
    root = tmp_path_factory.mktemp("scratch-root")
    result = subprocess.run(["bash", str(REPO_ROOT / "systemd" / "install.sh"), "--root", str(root),
                             "--python", sys.executable, "--pip-args", "--no-deps"], env=with_dependencies({}),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return root


def with_dependencies(env: dict[str, str]) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env, "PYTHONPATH": str(SITE_PACKAGES)}


def test_the_install_script_lays_the_service_out_with_the_modes_it_needs(installed: Path, tmp_path: Path) -> None:
    assert (installed / "opt/linewatch/.venv/bin/linewatch").is_file()
    unit = installed / "etc/systemd/system/linewatch.service"
    assert unit.read_text() == (REPO_ROOT / "systemd" / "linewatch.service").read_text()
    assert stat.S_IMODE((installed / "etc/linewatch").stat().st_mode) == 0o755, "the dynamic user reads a CA here"
    env_file = installed / "etc/linewatch/linewatch.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600 and env_file.read_text() == EXAMPLE.read_text()
    # the unit's ExecStart is what the script made
    exec_start = next(line for line in unit.read_text().splitlines() if line.startswith("ExecStart="))
    assert exec_start == "ExecStart=/opt/linewatch/.venv/bin/linewatch run"
    # `systemctl help linewatch` opens the unit's documentation: every file it names was installed
    docs = [url for line in unit.read_text().splitlines() if line.startswith("Documentation=")
            for url in line.removeprefix("Documentation=").split()]
    files = [url.removeprefix("file://") for url in docs if url.startswith("file://")]
    assert files and all((installed / path.lstrip("/")).is_file() for path in files), docs
    if shutil.which("systemd-analyze"):  # verify checks that ExecStart is executable: the one the script made
        rooted = tmp_path / "linewatch.service"
        rooted.write_text(unit.read_text().replace("/opt/linewatch/", f"{installed}/opt/linewatch/"))
        verify = subprocess.run(["systemd-analyze", "verify", str(rooted)], capture_output=True, text=True,
                                timeout=60)
        assert verify.returncode == 0 and "linewatch.service" not in verify.stderr, verify.stderr


def test_the_installed_service_finds_its_model_and_starts_with_the_example_settings(
    installed: Path, tmp_path: Path
) -> None:
    """Before: a regular `pip install` (not editable) pointed the default model into site-packages, where no
    model is: `linewatch run` exited 2."""
    env = systemd_env_file((installed / "etc/linewatch/linewatch.env").read_text())  # as systemd passes it
    env = with_dependencies({**env, "HOME": str(tmp_path), "YOLO_OFFLINE": "1",
                             "LINEWATCH_OUTBOX__DIR": str(tmp_path / "state")})
    linewatch = installed / "opt/linewatch/.venv/bin/linewatch"
    checked = subprocess.run([str(linewatch), "check-config"], env=env, cwd=tmp_path, capture_output=True, text=True,
                             timeout=120)
    assert checked.returncode == ExitCode.OK, checked.stderr
    model = json.loads(checked.stdout)["LINEWATCH_MODEL__PATH"]
    assert model == str(installed / "opt/linewatch/.venv/share/linewatch/models/linewatch-defects.pt")
    # and it runs: the example's camera (an RTSP address on a plant network) is not here, so a synthetic one
    env.update(LINEWATCH_CAMERA__URL="synthetic://line?fps=5", LINEWATCH_MQTT__URL="mqtt://127.0.0.1:1",
               LINEWATCH_HTTP__HOST="127.0.0.1", LINEWATCH_HTTP__PORT=str(free_port()))
    daemon = DaemonProcess(env, args=[str(linewatch), "run"], module="", inherit_env=False, cwd=tmp_path).start()
    try:
        loaded = daemon.wait_for_event("model_loaded", 120)
        assert loaded["weights"].startswith(str(installed / "opt/linewatch/.venv/share/linewatch/models"))
        daemon.wait_for_event("daemon_ready", 60)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == ExitCode.OK, daemon.describe()
    finally:
        daemon.close()
    assert os.access(linewatch, os.X_OK)
