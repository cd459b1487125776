"""Benchmarks are not timed tests: this only smoke-runs bench/cameras.py for a few seconds, so it cannot rot.
The figures it prints are not asserted; the files it must write are."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_cameras_benchmark_runs_and_writes_json_markdown_and_a_plot(tmp_path: Path) -> None:
    out = tmp_path / "cameras"
    subprocess.run([sys.executable, "bench/cameras.py", "--cameras", "1,2", "--rounds", "1", "--seconds", "1",
                    "--out", str(out)], cwd=REPO, check=True, timeout=300, capture_output=True)
    report = json.loads(out.with_suffix(".json").read_text())
    assert {row["cameras"] for row in report["rows"]} == {1, 2}
    assert {(row["kind"], row["batching"]) for row in report["rows"]} == {
        ("file", True), ("file", False), ("live", True), ("live", False)}
    assert all(row["aggregate_fps"] > 0 for row in report["rows"])
    assert "| file | 2 | on |" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
