"""The configuration reference is generated from the settings models: docs/configuration.md is what
`linewatch check-config --list --markdown` prints, and the JSON list holds every accepted variable with a
default that the settings themselves accept."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.settings import known_variables, load_settings

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "configuration.md"
pytestmark = pytest.mark.slow  # outside the unit tier (pyproject.toml: markers): the CLI as a process


def _cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "daemon", "check-config", *args], cwd=REPO, capture_output=True,
                          text=True, check=True, env={"PATH": "/usr/bin:/bin"})
    return done.stdout


def test_the_committed_configuration_page_is_what_the_command_prints() -> None:
    assert PAGE.read_text() == _cli("--markdown"), (
        "docs/configuration.md is out of date: run `linewatch check-config --markdown > docs/configuration.md`")


def test_the_json_list_names_every_accepted_variable_once_with_its_type_default_and_range() -> None:
    listed = json.loads(_cli("--json"))
    names = [v["name"] for v in listed]
    assert len(names) == len(set(names)) and set(names) == set(known_variables())
    by_name = {v["name"]: v for v in listed}
    assert by_name["LINEWATCH_RULES__MIN_CONFIDENCE"]["default"] == "0.7"
    assert by_name["LINEWATCH_RULES__MIN_CONFIDENCE"]["range"] == "0 < x ≤ 1"
    assert by_name["LINEWATCH_EVENTS__MODE"]["type"] == "one of defects, frames"
    assert by_name["LINEWATCH_CAMERA__URL"]["default"] == "required"
    assert all(v["description"] for v in listed), [v["name"] for v in listed if not v["description"]]
    text = _cli("--list")
    assert all(name in text for name in names)


def test_every_default_the_reference_shows_is_one_the_settings_accept() -> None:
    """Given back explicitly, each shown default loads (a page that shows a default the code refuses is wrong)."""
    listed = json.loads(_cli("--json"))
    env = {"LINEWATCH_CAMERA__URL": "synthetic://line"}
    for v in listed:
        name, default = v["name"], v["default"]
        if "<NAME>" in name or not default or default == "required" or v["type"] == "JSON object":
            continue
        if name.startswith(("LINEWATCH_CAMERA__", "LINEWATCH_MODEL__PATH", "LINEWATCH_ENV_FILE")):
            continue  # a camera's defaults depend on its kind; the model path's on the installation
        env[name] = default
    settings = load_settings(env)
    assert settings.rules.min_confidence == 0.7 and settings.events.mode == "defects"
