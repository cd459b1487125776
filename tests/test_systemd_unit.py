"""The shipped systemd unit: valid, hardened, and consistent with the documented exit codes."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.exitcodes import ExitCode

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "linewatch.service"
pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")


def test_the_unit_verifies_cleanly(tmp_path: Path) -> None:
    # verify insists the ExecStart binary exists: point it at this checkout's real entry point.
    entry = Path(sys.executable).with_name("linewatch")
    assert entry.is_file(), "linewatch is not installed in this environment"
    unit = tmp_path / "linewatch.service"
    unit.write_text(UNIT.read_text().replace("/opt/linewatch/.venv/bin/linewatch", str(entry)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "linewatch.service" not in result.stderr, result.stderr  # no warning about our unit


def test_the_unit_is_hardened() -> None:
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNIT)],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for linewatch.service: ([\d.]+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 1.5, f"exposure {match.group(1)} (0 safest, 10 unsafe)"


def test_restart_policy_matches_the_exit_codes() -> None:
    text = UNIT.read_text()
    prevented = {int(code) for code in re.search(r"^RestartPreventExitStatus=(.*)$", text, re.M).group(1).split()}  # type: ignore[union-attr]
    assert prevented == {ExitCode.CONFIG, ExitCode.BOOT, ExitCode.CAMERA}
    assert ExitCode.WATCHDOG not in prevented and ExitCode.INTERNAL not in prevented
    assert re.search(r"^Restart=on-failure$", text, re.M)
    assert re.search(r"^Type=notify$", text, re.M), "READY=1 is sent after warm-up; the unit must wait for it"
