"""Benchmarks are not timed tests: this only smoke-runs each benchmark in bench/ for a few seconds, so none can rot.
The figures it prints are not asserted; the files it must write are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.genicam import fake_camera_missing
from tests.support.rtsp import rtsp_missing

pytestmark = pytest.mark.slow  # outside the unit tier (pyproject.toml: markers)

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


def _bench(tmp_path: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEWATCH_")}
    done = subprocess.run([sys.executable, *args], cwd=REPO, timeout=600, capture_output=True, text=True,
                          env={**env, "LINEWATCH_BENCH_OUT": str(tmp_path), "YOLO_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]


def _written(tmp_path: Path, name: str, *, plot: bool = True) -> dict[str, Any]:
    if plot:
        assert tmp_path.joinpath(f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert tmp_path.joinpath(f"{name}.md").read_text().startswith("# ")
    return dict(json.loads(tmp_path.joinpath(f"{name}.json").read_text()))


@pytest.mark.integration
def test_the_efficiency_benchmark_runs_each_contender_and_writes_its_results(tmp_path: Path) -> None:
    _bench(tmp_path, "bench/efficiency.py", "--backends", "openvino", "--seconds", "1", "--rounds", "1")
    report = _written(tmp_path, "efficiency")
    assert report["machine"]["cpu_model"]
    assert all(report["summary"]["openvino"]["fps"][c] > 0 for c in ("raw", "raw_streams", "daemon", "daemon_1_stream",
                                                                   "naive", "stream"))


@pytest.fixture
def stamp_camera_runs() -> None:
    """bench/stamp_camera.py needs Debian's python3-gi and GStreamer's RTSP server."""
    reason = rtsp_missing()
    if reason:
        pytest.skip(reason)


@pytest.mark.integration
@pytest.mark.usefixtures("stamp_camera_runs")
def test_the_freshness_benchmark_aligns_the_daemon_with_the_stamping_camera(tmp_path: Path) -> None:
    _bench(tmp_path, "bench/freshness.py", "--seconds", "3", "--contenders", "floor,daemon")
    report = _written(tmp_path, "freshness")
    assert report["summary"]["floor"]["n"] > 0 and report["summary"]["daemon"]["n"] > 0
    assert report["summary"]["daemon"]["frame_seq_offset"] is not None


@pytest.mark.integration
@pytest.mark.usefixtures("stamp_camera_runs")
def test_the_overhead_benchmark_samples_the_daemon_process(tmp_path: Path) -> None:
    _bench(tmp_path, "bench/overhead.py", "--minutes", "0.2", "--starts", "1")
    report = _written(tmp_path, "overhead")
    assert report["summary"]["start_to_ready_s"] > 0 and report["summary"]["peak_rss_mb"] > 0
    assert report["summary"]["one_stream_rss_at_ready_mb"] > 0
    assert len(report["samples"]) >= 2
    assert report["summary"]["glass_to_mqtt_ms"]["n"] > 0


def test_the_openvino_pinning_benchmark_runs_each_configuration(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    _bench(tmp_path, "bench/openvino_pinning.py", "--rounds", "1", "--seconds", "0.5")
    report = _written(tmp_path, "openvino_pinning")
    assert len(report["summary"]) == 3 and all(fps > 0 for fps in report["summary"].values())


@pytest.mark.integration
def test_the_soak_benchmark_samples_each_contender_while_the_broker_flaps(tmp_path: Path) -> None:
    _bench(tmp_path, "bench/soak.py", "--minutes", "0.4", "--warmup-min", "0.1", "--cameras", "2",
           "--flap-every-s", "10", "--flap-down-s", "3", "--compare")
    report = _written(tmp_path, "soak")
    assert set(report["summary"]) == {"daemon", "glibc defaults"}
    assert report["flap"]["outages"] >= 1 and report["messages_consumed"] > 0
    assert all(len(points) >= 10 for points in report["samples"].values())


@pytest.mark.integration
def test_the_plc_latency_benchmark_runs_each_client_and_every_verdict_comes_once_in_order(tmp_path: Path) -> None:
    _bench(tmp_path, "bench/plc_latency.py", "--jobs", "5")
    report = _written(tmp_path, "plc_latency")
    clients = {"modbus", "opcua", "mqtt"}
    if fake_camera_missing() is None:  # then the same clients against a software-triggered GenICam camera
        clients |= {f"genicam {name}" for name in clients}
        assert report["genicam"]["trigger_to_frame_p50_ms"] > 0
    assert set(report["clients"]) == clients
    assert all(c["every_verdict_once_in_order"] and c["p50_ms"] > 0 for c in report["clients"].values())


@pytest.mark.integration
def test_the_genicam_benchmark_reads_the_fake_camera_beside_an_rtsp_camera(tmp_path: Path) -> None:
    for missing in (fake_camera_missing(), rtsp_missing()):
        if missing:
            pytest.skip(missing)
    _bench(tmp_path, "bench/genicam_camera.py", "--seconds", "1", "--triggers", "3")
    report = _written(tmp_path, "genicam_camera")
    assert set(report["free_run"]) == {"genicam", "genicam, 8192-byte packets", "rtsp"}
    assert all(f["frames"] > 0 and f["cpu_ms_per_frame"] > 0 for f in report["free_run"].values())
    assert len(report["software_trigger"]["latencies_ms"]) == 3


def test_the_verdict_accuracy_benchmark_judges_parts_against_the_ground_truth(tmp_path: Path) -> None:
    _bench(tmp_path, "bench/verdict_accuracy.py", "--parts", "6")
    report = _written(tmp_path, "verdict_accuracy", plot=False)  # a table says it all: counts and the wrong parts
    assert report["parts"] == 6 and report["defective"] + report["good"] == 6


@pytest.mark.integration
def test_the_box_limit_benchmark_runs_the_bare_loop_and_the_daemon_in_turns(tmp_path: Path) -> None:
    _bench(tmp_path, "bench/box_limit.py", "--backends", "openvino", "--cameras", "1", "--pairs", "1",
           "--window", "1")
    report = _written(tmp_path, "box_limit")
    row = report["rows"][0]
    assert row["bare"]["fps"] > 0 and row["daemon"]["fps"] > 0 and row["ratio"] > 0
    assert len(row["bare"]["fps_each"]) == 2 and len(row["daemon"]["fps_each"]) == 1, "bare, daemon, bare"
    threads = row["daemon"]["thread_ms_per_frame"]
    assert {"capture:c0", "detect", "events:c0", "publish:mqtt"} <= set(threads), "each stage's thread is named"
    assert {"decode-0", "infer-0"} <= set(row["bare"]["thread_ms_per_frame"])


def test_the_tiles_benchmark_judges_whole_frames_and_tiles_on_5_mp_frames_and_runs_the_daemon_both_ways(
        tmp_path: Path) -> None:
    _bench(tmp_path, "bench/tiles.py", "--frames", "2", "--seconds", "2")
    report = _written(tmp_path, "tiles")
    assert report["tiles_per_frame"] == 80 and report["defects"] > 0
    assert set(report["recall_all"]) == {"whole frame", "tiles", "tiles + whole frame"}
    assert all(0 <= r["floor (0.25)"] <= 1 for r in report["recall_all"].values())
    assert report["decode_jpeg_5mp_ms"] > 0
    assert all(d["inspected_fps"] > 0 and d["age_p99_ms"] is not None for d in report["daemon"].values())


@pytest.mark.integration
@pytest.mark.usefixtures("stamp_camera_runs")
def test_the_capacity_benchmark_measures_an_idle_camera_and_grows_n_until_it_fails(tmp_path: Path) -> None:
    _bench(tmp_path, "bench/capacity.py", "--sizes", "640x480", "--max", "1", "--seconds", "2")
    report = _written(tmp_path, "capacity")
    assert report["idle"]["fps"] == 1 and report["idle"]["daemon_cpu_percent"] > 0
    assert [row["cameras"] for row in report["rows"]] == [1] and report["rows"][0]["ages"] > 0


@pytest.mark.integration
@pytest.mark.usefixtures("stamp_camera_runs")
def test_the_cpu_account_adds_the_pieces_up_to_the_process_and_measures_the_bare_loop(tmp_path: Path) -> None:
    _bench(tmp_path, "bench/cpu_account.py", "--seconds", "2", "--rounds", "1", "--modes", "defects")
    report = _written(tmp_path, "cpu_account")
    row = report["rows"][0]
    pieces = row["daemon"]["pieces_ms"]
    assert abs(sum(pieces.values()) - row["daemon"]["process_ms"]) < 1e-6, "the pieces add up to the process"
    assert pieces["capture"] > 0 and pieces["detect"] > 0
    assert row["bare"]["decode_ms"] > 0 and row["bare"]["model_ms"] > 0
