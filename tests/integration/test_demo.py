"""The README's demo: the synthetic line, the embedded broker, defect events printed as they arrive."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from daemon.exitcodes import ExitCode

REPO_ROOT = Path(__file__).resolve().parents[2]
EVENT_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3}  synthetic-line  event #(\d+) +(NEW|END)  defect [0-9a-f]{8} \w+ ")


def demo_env(model_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEWATCH_")}
    return {**env, "YOLO_OFFLINE": "1", "LINEWATCH_MODEL__PATH": str(model_path), "PYTHONUNBUFFERED": "1"}


def test_demo_runs_for_a_duration_and_prints_events_that_came_over_mqtt(model_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "demo", "--seconds", "20"],
        env=demo_env(model_path), cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == ExitCode.OK, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any("started an embedded MQTT broker" in line for line in lines), "the demo must say it started one"
    events = [int(m.group(1)) for line in lines if (m := EVENT_LINE.match(line))]
    assert events, f"no defect event printed:\n{result.stdout}"
    assert events == list(range(1, len(events) + 1)), "events printed out of order or with gaps"
    new = [line for line in lines if " NEW " in line]
    assert new and all("snapshot /" in line and line.rstrip().endswith(".jpg") for line in new), new
    for line in new:  # the file it names is the picture that came over MQTT
        assert Path(line.rsplit("snapshot ", 1)[1]).read_bytes()[:3] == b"\xff\xd8\xff"
    # Output for people: no raw JSON log line, and each status change once
    assert not any(line.lstrip().startswith("{") for line in lines), result.stdout
    statuses = [line for line in lines if line.startswith("status ")]
    assert len(statuses) == len(set(statuses)), statuses
    assert statuses[-1] == "status  synthetic-line: offline (shutdown)", statuses
    summary = lines[-1]
    assert summary == f"demo: daemon exited with code 0; {len(events)} defect events received over MQTT"


def test_ctrl_c_stops_the_demo_cleanly(model_path: Path) -> None:
    # Ctrl-C in a terminal signals the whole foreground process group: the demo and its daemon.
    demo = subprocess.Popen(
        [sys.executable, "-m", "daemon", "demo"], env=demo_env(model_path), cwd=REPO_ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    assert demo.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 120
    for line in demo.stdout:  # the pipe is the synchronisation: wait until the first event is printed
        seen.append(line)
        if EVENT_LINE.match(line) or time.monotonic() > deadline:
            break
    assert any(EVENT_LINE.match(line) for line in seen), "".join(seen)
    os.killpg(demo.pid, signal.SIGINT)
    rest, _ = demo.communicate(timeout=30)
    assert demo.returncode == ExitCode.OK, "".join(seen) + rest
    assert "Traceback" not in rest
    assert "demo: daemon exited with code 0" in rest
