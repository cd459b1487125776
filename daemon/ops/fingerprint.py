"""A compact fingerprint of what this unit runs: versions, GPU and model. Goes into the retained `online`
status, so a fleet view shows which stations drifted, and into `/metrics` as `linewatch_build_info`."""

from __future__ import annotations

import platform
from importlib import metadata

from daemon import __version__


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "missing"


def fingerprint(model_sha256: str = "", device: str = "") -> dict[str, str]:
    """Call after torch is imported (the model is loaded): it reads torch's CUDA build and the GPU."""
    import torch

    cuda = torch.version.cuda or "none"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "linewatch": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": cuda,
        "gpu": gpu,
        "device": device,
        "opencv": _version("opencv-python") if _version("opencv-python") != "missing" else _version(
            "opencv-python-headless"),
        "ultralytics": _version("ultralytics"),
        "model_sha256": model_sha256,
    }
