"""Shared fixtures. Nothing is downloaded: Ultralytics runs offline with the model that the repo ships."""

from __future__ import annotations

import os

os.environ["YOLO_OFFLINE"] = "1"  # before anything imports Ultralytics

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.net import free_port

pytest_plugins = ["tests.support.fixtures"]

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MODEL = REPO_ROOT / "models" / "linewatch-defects.pt"
# Frames for tests come from a seed the model never saw (the dataset splits use seeds 1000, 2000, 3000).
TEST_SEED = 7001


OUTSIDE_THE_UNIT_TIER = ("integration", "image", "gpu", "slow")
INTEGRATION = REPO_ROOT / "tests" / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The unit tier (`scripts/test.sh -m unit`, under a minute): every test that no marker sends elsewhere, and
    # nothing of tests/integration/, whose every test starts real services
    for item in items:
        if INTEGRATION in item.path.parents:
            item.add_marker(pytest.mark.integration)
        if not any(item.get_closest_marker(name) for name in OUTSIDE_THE_UNIT_TIER):
            item.add_marker(pytest.mark.unit)
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def model_path() -> Path:
    # LW_TEST_MODEL lets a developer try a candidate model against the whole suite before shipping it.
    path = Path(os.environ.get("LW_TEST_MODEL", SHIPPED_MODEL))
    assert path.is_file(), f"the model {path} is missing"
    return path


@pytest.fixture(scope="session")
def run_weights_sha256(model_path: Path) -> str:
    """The model.sha256 events carry: of the weights actually run, which LINEWATCH_MODEL__BACKEND=auto picks
    beside the .pt (on this CPU, the shipped OpenVINO export; tests/detect/test_backends.py covers the choice)."""
    from daemon.detect.backends import choose_backend, weights_sha256

    return weights_sha256(choose_backend(model_path, "auto", "cpu").path)


def write_line_video(path: Path, *, seed: int, frames: int, fps: float = 10.0, width: int = 640,
                     height: int = 480) -> Path:
    """A real MJPG .avi of the synthetic line, decoded later by FFmpeg (and GStreamer) like any recording.

    MJPG, not mp4v: Debian's GStreamer decodes it with the base/good plugins, no libav needed.
    """
    import cv2

    from daemon.synthetic.line import LineParams, SyntheticLine

    line = SyntheticLine(LineParams(fps=fps, width=width, height=height, seed=seed, defect_rate=0.6))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened(), "OpenCV cannot write MJPG here"
    for index in range(frames):
        writer.write(line.render(index).image)
    writer.release()
    return path


@pytest.fixture(scope="session")
def line_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 frames (6 s at 10 fps) of the synthetic line with plenty of defects."""
    return write_line_video(tmp_path_factory.mktemp("video") / "line.avi", seed=TEST_SEED, frames=60)


@pytest.fixture
def daemon_env(tmp_path: Path, model_path: Path) -> Callable[..., dict[str, str]]:
    """Environment for `linewatch run`: JSON logs, a private state dir, the shipped model."""

    def make(camera_url: str, broker_url: str, **extra: str) -> dict[str, str]:
        env = {
            "LINEWATCH_CAMERA__URL": camera_url,
            "LINEWATCH_MQTT__URL": broker_url,
            "LINEWATCH_MODEL__PATH": str(model_path),
            "LINEWATCH_OUTBOX__DIR": str(tmp_path / "state"),
            "LINEWATCH_LOG__FORMAT": "json",
            "LINEWATCH_LOG__LEVEL": "info",
            # The ops HTTP server on a free loopback port: 9464 may be taken by another daemon on this machine.
            "LINEWATCH_HTTP__HOST": "127.0.0.1",
            "LINEWATCH_HTTP__PORT": str(free_port()),
            "YOLO_OFFLINE": "1",
        }
        env.update(extra)
        return env

    return make
