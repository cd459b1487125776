"""Backends: which export LINEWATCH_MODEL__BACKEND picks and why, that every backend available here finds the
same defects in the same frames, that the prepared path (letterbox on the capture thread) finds what
Ultralytics' own predict finds, and `linewatch export`.

TensorRT cannot run here (no CUDA): an `.engine` beside the weights is a placeholder file, and the tests
check that it is passed over (auto) or refused (asked for by name) with the reason."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest

from daemon.detect.backends import BackendError, choose_backend, export_path
from daemon.detect.model import Detector
from daemon.frames import Frame, utc_now
from daemon.settings import ModelSettings
from daemon.synthetic.line import LineParams, SyntheticLine
from daemon.tools.export import agreement

pytestmark = pytest.mark.slow  # outside the unit tier (pyproject.toml: markers)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def lone_weights(tmp_path: Path, model_path: Path) -> Path:
    """The shipped .pt alone in a folder: no exports beside it."""
    return Path(shutil.copy2(model_path, tmp_path / "line.pt"))


def test_auto_on_this_cpu_picks_the_shipped_openvino_export_and_says_why(model_path: Path) -> None:
    choice = choose_backend(model_path, "auto", "cpu")
    assert choice.backend == "openvino"
    assert choice.path == model_path.parent / f"{model_path.stem}_openvino_model"
    assert choice.reason.startswith("fastest available on cpu (order openvino > onnx > pt)")
    assert choice.imgsz == 320  # the export's own size, the default inference size


def test_auto_falls_back_in_order_and_names_each_export_it_passed_over(lone_weights: Path, model_path: Path) -> None:
    choice = choose_backend(lone_weights, "auto", "cpu")
    assert (choice.backend, choice.path) == ("pt", lone_weights)
    assert "openvino: no line_openvino_model/ beside the weights" in choice.reason
    assert "onnx: no line.onnx beside the weights" in choice.reason
    shutil.copy2(model_path.with_suffix(".onnx"), lone_weights.with_suffix(".onnx"))
    assert choose_backend(lone_weights, "auto", "cpu").backend == "onnx"


def test_on_cuda_an_engine_without_tensorrt_is_passed_over_for_the_pt(lone_weights: Path) -> None:
    lone_weights.with_suffix(".engine").write_bytes(b"placeholder: no TensorRT here")
    choice = choose_backend(lone_weights, "auto", "cuda:0")
    assert choice.backend == "pt"
    assert "engine: the tensorrt package is not installed" in choice.reason
    with pytest.raises(BackendError, match="LINEWATCH_MODEL__BACKEND=engine: the tensorrt package is not installed"):
        choose_backend(lone_weights, "engine", "cuda:0")


def test_a_backend_asked_for_by_name_without_its_export_is_refused_with_the_command_that_makes_it(
        lone_weights: Path) -> None:
    with pytest.raises(BackendError) as caught:
        choose_backend(lone_weights, "openvino", "cpu")
    assert str(caught.value) == ("LINEWATCH_MODEL__BACKEND=openvino: no line_openvino_model/ beside the weights; "
                                 "make it with: linewatch export --format openvino")


def test_a_path_naming_an_export_is_used_as_it_is_and_must_not_contradict_the_backend(model_path: Path) -> None:
    onnx = model_path.with_suffix(".onnx")
    assert choose_backend(onnx, "auto", "cpu").backend == "onnx"
    with pytest.raises(BackendError, match="is a onnx export"):
        choose_backend(onnx, "openvino", "cpu")


def _run_daemon(tmp_path: Path, weights: Path, backend: str) -> subprocess.CompletedProcess[str]:
    env = {"LINEWATCH_CAMERA__URL": "synthetic://line", "LINEWATCH_MODEL__PATH": str(weights),
           "LINEWATCH_MODEL__BACKEND": backend, "LINEWATCH_MQTT__URL": "mqtt://127.0.0.1:9",
           "LINEWATCH_OUTBOX__DIR": str(tmp_path / "state"), "LINEWATCH_HTTP__ENABLED": "false",
           "LINEWATCH_LOG__FORMAT": "json", "YOLO_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "daemon", "run"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_daemon_exits_3_naming_the_variable_when_the_backend_cannot_run(tmp_path: Path,
                                                                            lone_weights: Path) -> None:
    done = _run_daemon(tmp_path, lone_weights, "onnx")
    assert done.returncode == 3, done.stderr
    assert "LINEWATCH_MODEL__BACKEND=onnx: no line.onnx beside the weights" in done.stdout


def test_an_export_the_runtime_cannot_open_exits_3_not_1(tmp_path: Path, lone_weights: Path) -> None:
    # Ultralytics opens an export only when its names are first read; that failure was a crash (exit 1)
    lone_weights.with_suffix(".onnx").write_bytes(b"not an ONNX graph: a truncated copy")
    done = _run_daemon(tmp_path, lone_weights, "onnx")
    assert done.returncode == 3, done.stderr
    assert "cannot load model" in done.stdout and "Traceback" not in done.stdout


def _frames(count: int) -> list[Frame]:
    line = SyntheticLine(LineParams(seed=7300, defect_rate=0.6))
    frames = []
    for index in range(count):
        image = line.render(index * 5).image
        image.setflags(write=False)
        frames.append(Frame("cam", index, image, 0.0, utc_now()))
    return frames


def _boxes(found: list[tuple]) -> list[list[tuple[int, list[float]]]]:  # type: ignore[type-arg]
    return [[(d.class_id, [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2]) for d in frame if d.confidence >= 0.5]
            for frame in found]


def _prepared(detector: Detector, frames: list[Frame]) -> list[Frame]:
    """What the capture thread hands over: each frame with its letterbox made (daemon/sources/capture.py)."""
    out = []
    for frame in frames:
        prepared = detector.prepare(frame.image)
        assert prepared is not None, "the detector was warmed up: prepare() must letterbox"
        out.append(Frame(frame.camera_id, frame.seq, frame.image, frame.captured_mono, frame.captured_utc, prepared))
    return out


def test_every_backend_here_finds_the_same_classes_with_boxes_within_iou_0_9(model_path: Path) -> None:
    frames = _frames(20)
    results = {}
    for backend in ("pt", "onnx", "openvino"):
        detector = Detector(ModelSettings(path=model_path, backend=backend, device="cpu"))
        assert detector.backend_name == backend
        detector.warm_up(640, 480, 1)
        found, _ = detector.infer_frames(_prepared(detector, frames))
        results[backend] = _boxes(found)
    assert sum(len(f) for f in results["pt"]) >= 30, "the frames must hold defects for the comparison to mean much"
    for backend in ("onnx", "openvino"):
        agreed = agreement(results["pt"], results[backend], min_iou=0.9)
        assert agreed.ok, f"{backend} differs from pt: {agreed.unmatched}"


def test_the_prepared_path_finds_exactly_what_ultralytics_predict_finds(model_path: Path) -> None:
    # The capture thread letterboxes; the detector runs the model, Ultralytics' NMS and box scaling. Nothing of
    # Ultralytics' pre- or post-processing is forked, so the detections must be Ultralytics' own.
    frames = _frames(12)
    for backend in ("pt", "openvino"):
        detector = Detector(ModelSettings(path=model_path, backend=backend, device="cpu"))
        detector.warm_up(640, 480, 1)
        via_predict, _ = detector.infer_batch([frame.image for frame in frames])
        via_prepared, _ = detector.infer_frames(_prepared(detector, frames))
        assert sum(len(f) for f in via_predict) >= 15
        for ours, theirs in zip(via_prepared, via_predict, strict=True):
            assert [d.class_id for d in ours] == [d.class_id for d in theirs]
            for mine, reference in zip(ours, theirs, strict=True):
                assert mine.confidence == pytest.approx(reference.confidence, abs=2e-3)
                assert np.allclose(astuple(mine.bbox), astuple(reference.bbox), atol=1.0)


def test_linewatch_export_makes_a_checked_onnx_beside_the_weights_and_refuses_what_cannot_be_made(
        lone_weights: Path) -> None:
    def export(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "daemon", "export", "--weights", str(lone_weights), *args],
                              cwd=REPO, capture_output=True, text=True, timeout=300,
                              env={"YOLO_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(lone_weights.parent)})

    made = export("--format", "onnx")
    assert made.returncode == 0, made.stderr
    assert "detections agree over 24 frames" in made.stdout
    assert export_path(lone_weights, "onnx").is_file()
    assert choose_backend(lone_weights, "auto", "cpu").backend == "onnx"
    assert not [p for p in lone_weights.parent.iterdir() if p.name.startswith(".export-")], "scratch left behind"
    engine = export("--format", "engine")
    assert engine.returncode == 3 and "CUDA is not available here" in engine.stderr
    int8 = export("--format", "openvino", "--int8")
    assert int8.returncode == 2 and "--int8 is for --format engine only" in int8.stderr


def test_a_cpu_detector_never_imports_torchvision(model_path: Path, tmp_path: Path) -> None:
    # Ultralytics' warm-up imports torchvision on a CPU only to pick its NMS kernel; that import pulls in
    # torch._dynamo, sympy and triton, 160 MB of resident memory. linewatch skips that warm-up (it runs its own
    # inferences) and Ultralytics' own NMS gives the same boxes (the prepared-path test above).
    script = ("import sys; from pathlib import Path; from daemon.detect.model import Detector; "
              "from daemon.settings import ModelSettings; "
              f"d = Detector(ModelSettings(path=Path({str(model_path)!r}), device='cpu')); d.warm_up(640, 480, 2); "
              "print('torchvision' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"YOLO_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
