"""Streams: the detector runs several inferences side by side on a CPU, each worker thread on its own copy of the
model, and still hands each camera its results in the order its frames were taken.

The model, its runtimes and the cameras (the synthetic line through the real capture stage) are real. Where a
test watches which worker ran which inference, it wraps the real call and lets it run."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from daemon.backoff import Backoff
from daemon.detect.model import Detector
from daemon.detect.stage import DetectStage, Lane
from daemon.detect.threads import MAX_AUTO_STREAMS, default_streams, default_threads
from daemon.detect.tiles import ModelInput
from daemon.exitcodes import FailureKind
from daemon.frames import END_OF_STREAM, Frame, Inference
from daemon.handoff import Bell, DropPolicy, Handoff
from daemon.metrics import Metrics
from daemon.settings import ModelSettings
from daemon.sources.capture import CaptureStage
from daemon.sources.synthetic import SyntheticSource

pytestmark = pytest.mark.slow  # outside the unit tier (pyproject.toml: markers)

REPO = Path(__file__).resolve().parents[2]


def test_a_cpu_runs_a_stream_per_cpu_of_its_quota_and_a_gpu_one() -> None:
    assert [default_streams("cpu", cpus) for cpus in (1, 2, 3, 8, 64)] == [1, 2, 3, MAX_AUTO_STREAMS, MAX_AUTO_STREAMS]
    # LINEWATCH_MODEL__THREADS alone: as many streams as fill the quota at that count (found in review: THREADS=3
    # on 4 CPUs, from before streams, would have run 4 streams x 3 threads)
    assert [default_streams("cpu", cpus, threads) for cpus, threads in ((4, 3), (2, 1), (8, 2), (2, 4))] == [1, 2, 4, 1]
    assert default_streams("cuda:0", 16) == default_streams("mps", 8) == 1
    # One stream leaves a CPU to the pipeline's own threads; several share the quota, at least one thread each
    assert [default_threads(cpus, 1) for cpus in (1, 2, 8)] == [1, 1, 7]
    assert [default_threads(cpus, streams) for cpus, streams in ((2, 2), (8, 4), (3, 2), (2, 4))] == [1, 2, 1, 1]


@pytest.mark.parametrize("backend", ["pt", "onnx", "openvino"])
def test_each_stream_owns_a_copy_of_the_model_on_the_threads_it_was_given(model_path: Path, backend: str) -> None:
    torch = pytest.importorskip("torch")
    detector = Detector(ModelSettings(path=model_path, backend=backend, device="cpu", streams=2, threads=1))
    detector.warm_up(320, 240, 1)
    first, second = detector.backend(0), detector.backend(1)
    assert first is not second  # Ultralytics' predictor, and an OpenVINO request, are not thread-safe
    assert torch.get_num_threads() == 1
    if backend == "onnx":  # ONNX Runtime sizes its pool to the host's cores unless told
        for loaded in (first, second):
            assert loaded.backend.session.get_session_options().intra_op_num_threads == 1
    if backend == "openvino":  # OpenVINO also pins its threads: two copies pinned to one core ran at half speed
        for loaded in (first, second):
            compiled = loaded.backend.ov_compiled_model
            assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 1
            assert compiled.get_property("ENABLE_CPU_PINNING") is False


def test_a_sigterm_after_openvino_models_were_loaded_and_released_is_handled(model_path: Path) -> None:
    # OpenVINO points the thread's signal stack at memory of its own Core, and restores the previous one when that
    # Core is released: Cores released in the order they were made left it pointing at freed memory, and the next
    # SIGTERM (how systemd and a container stop the daemon) crashed the process with SIGSEGV. Before the fixes:
    # the recompile made a second Core of its own (one detector was enough); then each copy's Core was released
    # with its detector, and two detectors released in the order they were made crashed it (as in this suite).
    code = ("import gc, os, signal, threading, numpy as np\n"
            "from daemon.detect.model import Detector\n"
            "from daemon.settings import ModelSettings\n"
            f"settings = ModelSettings(path={str(model_path)!r}, backend='openvino', device='cpu', streams=2)\n"
            "first, second = Detector(settings), Detector(settings)\n"
            "first.warm_up(320, 240, 1); second.warm_up(320, 240, 1)\n"
            "del first; gc.collect()\n"
            "del second; gc.collect()\n"
            "got = threading.Event()\n"
            "signal.signal(signal.SIGTERM, lambda *_: got.set())\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "assert got.wait(5)\n"
            "print('handled')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip().endswith("handled")


def _camera(camera_id: str, url: str, policy: DropPolicy, bell: Bell, stop: threading.Event, metrics: Metrics,
            prepare: Callable[[Any], Any]) -> tuple[CaptureStage, Lane]:
    frames: Handoff[Frame] = Handoff(f"frames:{camera_id}", 1 if policy is DropPolicy.LATEST else 8, policy, stop,
                                     on_drop=metrics.frames_dropped.labels(camera_id).inc, bell=bell)
    results: Handoff[Inference] = Handoff(f"results:{camera_id}", 10_000, DropPolicy.WAIT, stop)
    capture = CaptureStage(camera_id, SyntheticSource(url), frames, stop, backoff=Backoff(0.1, 1.0),
                           stall_timeout_s=10.0, on_status=lambda status: None, metrics=metrics, prepare=prepare)
    return capture, Lane(camera_id, frames, results)


class _Watched:
    """The real detector's infer_inputs, with which stream ran each call and when."""

    def __init__(self, detector: Detector, fail_on_stream: int | None = None) -> None:
        self.calls: list[tuple[int, float, float]] = []
        self._real = detector.infer_inputs
        self._fail_on = fail_on_stream
        detector.infer_inputs = self  # type: ignore[method-assign]

    def __call__(self, inputs: list[ModelInput], stream: int = 0) -> Any:
        if stream == self._fail_on:
            raise RuntimeError(f"injected failure on stream {stream}")
        started = time.monotonic()
        found = self._real(inputs, stream)
        self.calls.append((stream, started, time.monotonic()))
        return found


@pytest.fixture(scope="module")
def two_streams(model_path: Path) -> Detector:
    detector = Detector(ModelSettings(path=model_path, device="cpu", streams=2))
    detector.warm_up(640, 480, 2)
    return detector


def _drain(lane: Lane, timeout_s: float = 120.0) -> list[Inference]:
    got: list[Inference] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        item = lane.results.get(1.0)
        if item is END_OF_STREAM:
            return got
        if item is not None:
            got.append(item)  # type: ignore[arg-type]
    raise AssertionError(f"{lane.camera_id}: its results were never closed")


def test_streams_run_side_by_side_and_each_camera_gets_every_result_in_order(two_streams: Detector) -> None:
    # Given two streams, a finite camera read at full speed (a file: every frame must be inspected) and a live one
    stop, bell, metrics = threading.Event(), Bell(), Metrics()
    watched = _Watched(two_streams)
    cameras = {cid: _camera(cid, url, policy, bell, stop, metrics, two_streams.prepare) for cid, url, policy in (
        ("file", "synthetic://line?realtime=false&seed=3&frames=120", DropPolicy.WAIT),
        ("live", "synthetic://line?fps=15&seed=4&frames=30", DropPolicy.LATEST))}
    stage = DetectStage(two_streams, [lane for _, lane in cameras.values()], bell, stop, metrics=metrics)
    try:
        stage.start()
        for capture, _ in cameras.values():
            capture.start()
        results = {cid: _drain(lane) for cid, (_, lane) in cameras.items()}
        assert stage.join(30)
    finally:
        stop.set()
        for capture, _ in cameras.values():
            capture.join(10)
        two_streams.infer_inputs = watched._real  # type: ignore[method-assign]
    # Then both streams ran inferences, and some of them at the same time
    assert {stream for stream, _, _ in watched.calls} == {0, 1}
    spans = sorted((start, end) for _, start, end in watched.calls)
    assert any(later_start < end for (_, end), (later_start, _) in pairwise(spans))
    # And each camera's results came in the order of its frames, the file's every one of them, before its end
    assert [r.frame.seq for r in results["file"]] == list(range(120))
    live = [r.frame.seq for r in results["live"]]
    assert live == sorted(live) and len(set(live)) == len(live) and live
    assert metrics.value("linewatch_inferences_lost_total", camera="file") == 0
    assert stage.failure is None


@pytest.mark.parametrize("stream", [0, 1], ids=["the stage's own thread", "a helper thread"])
def test_a_worker_that_crashes_fails_the_stage_and_the_others_leave(two_streams: Detector, stream: int) -> None:
    stop, bell, metrics = threading.Event(), Bell(), Metrics()
    watched = _Watched(two_streams, fail_on_stream=stream)
    capture, lane = _camera("cam", "synthetic://line?realtime=false&seed=5", DropPolicy.WAIT, bell, stop, metrics,
                            two_streams.prepare)
    stage = DetectStage(two_streams, [lane], bell, stop, metrics=metrics)
    stage.on_failure = lambda failure: stop.set()  # what the composition root does: stop the pipeline
    try:
        stage.start()
        capture.start()
        assert stop.wait(60), "the crash was not reported"
        assert capture.join(10)
        assert stage.join(30), "a worker was left running"
    finally:
        stop.set()
        two_streams.infer_inputs = watched._real  # type: ignore[method-assign]
    failure = stage.failure
    assert failure is not None and failure.kind is FailureKind.BUG
    assert f"injected failure on stream {stream}" in failure.reason
    # The frames of the failed batch are counted lost, not dropped silently; what did arrive is in order
    assert metrics.value("linewatch_inferences_lost_total", camera="cam") >= 1
    seqs = []
    while (item := lane.results.get(0.0)) not in (None, END_OF_STREAM):
        seqs.append(item.frame.seq)  # type: ignore[union-attr]
    assert seqs == sorted(seqs)
    assert lane.results.get(0.0) is END_OF_STREAM  # the event stage is not left waiting
