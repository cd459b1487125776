"""Which runtime runs the model: PyTorch (.pt), ONNX Runtime (.onnx), OpenVINO (a `<stem>_openvino_model/` folder)
or TensorRT (.engine). All are loaded by Ultralytics; this module only decides which file to hand it.

`LINEWATCH_MODEL__BACKEND=auto` (the default) takes the fastest export that lies beside the weights, that this
device can run and whose runtime is installed, in this order (measured in bench/results/efficiency.md):

    CUDA:  engine > pt          (ONNX Runtime's CPU wheel cannot use the GPU; PyTorch can)
    CPU:   openvino > onnx > pt

Exports are named as `linewatch export` (and Ultralytics' own export) writes them beside a `.pt`:
`linewatch-defects.onnx`, `linewatch-defects_openvino_model/`, `linewatch-defects.engine`. A path that already
names an export is used as it is. No import of a runtime happens here: availability is `find_spec`.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from daemon.settings import OPENVINO_DIR_SUFFIX

BACKENDS = ("pt", "onnx", "openvino", "engine")
_RUNTIME = {"pt": "torch", "torchscript": "torch", "onnx": "onnxruntime", "openvino": "openvino",
            "engine": "tensorrt"}
_ORDER = {"cuda": ("engine", "pt"), "cpu": ("openvino", "onnx", "pt")}
_FILE = {"pt": "PyTorch", "torchscript": "TorchScript", "onnx": "ONNX", "openvino": "OpenVINO", "engine": "TensorRT"}


class BackendError(Exception):
    """The requested backend cannot run here (exit code 3, like every model that cannot be loaded)."""


@dataclass(frozen=True, slots=True)
class BackendChoice:
    backend: str
    path: Path  # what Ultralytics loads: a file, or the OpenVINO folder
    reason: str  # one line for the log: why this one, and why not the faster ones
    imgsz: int | None = None  # the input size an export was made for (a static one runs at no other); None: a .pt


def export_imgsz(path: Path) -> tuple[int | None, bool]:
    """(the input size an export was made for, whether it is fixed), from Ultralytics' metadata; (None, False)
    for a .pt, or where an Ultralytics too old to read metadata without loading is installed (its predictor
    then finds out)."""
    if backend_of(path) in ("pt", "torchscript"):
        return None, False
    try:
        from ultralytics.nn.backends.base import BaseBackend
    except ImportError:
        return None, False
    meta = {key: _literal(value) for key, value in BaseBackend.read_metadata(path).items()}
    args = meta.get("args")
    size = meta.get("imgsz")
    if not isinstance(size, (int, list, tuple)) or not size:
        return None, False
    dynamic = bool(meta.get("dynamic") or (isinstance(args, dict) and args.get("dynamic")))
    return int(size if isinstance(size, int) else max(size)), not dynamic


def backend_of(path: Path) -> str:
    """The backend a weights path is for, from its name."""
    if path.name.endswith(OPENVINO_DIR_SUFFIX):
        return "openvino"
    return {".onnx": "onnx", ".engine": "engine", ".torchscript": "torchscript"}.get(path.suffix, "pt")


def source_stem(path: Path) -> str:
    """The model's name, the same for the .pt and each of its exports."""
    name = path.name
    return name[: -len(OPENVINO_DIR_SUFFIX)] if name.endswith(OPENVINO_DIR_SUFFIX) else path.stem


def export_path(weights: Path, backend: str) -> Path:
    """Where the export of `weights` for `backend` lies (or will lie)."""
    if backend == "openvino":
        return weights.parent / f"{weights.stem}{OPENVINO_DIR_SUFFIX}"
    return weights if backend == "pt" else weights.with_suffix(f".{backend}")


def runtime_missing(backend: str) -> str | None:
    module = _RUNTIME[backend]
    return None if importlib.util.find_spec(module) is not None else f"the {module} package is not installed"


def _usable(path: Path, backend: str, imgsz: int | None) -> tuple[str | None, int | None]:
    """(why the export at `path` cannot be used at `imgsz`, or None; the size it was made for)."""
    if backend == "openvino":
        if not (path.is_dir() and any(path.glob("*.xml"))):
            return f"no {path.name}/ beside the weights", None
    elif not path.is_file():
        return f"no {path.name} beside the weights", None
    missing = runtime_missing(backend)
    return (missing, None) if missing else _size_check(path, imgsz)


def _literal(value: object) -> object:
    """ONNX keeps metadata values as the repr of Python values ("[320, 320]"); the sidecar formats parse them."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _size_check(path: Path, imgsz: int | None) -> tuple[str | None, int | None]:
    """(why a static export cannot run at `imgsz`, or None; the size it was made for). Reads its metadata once."""
    fixed, static = export_imgsz(path)
    if imgsz is not None and static and fixed != imgsz:
        return f"{path.name} was exported for imgsz {fixed}, LINEWATCH_MODEL__IMGSZ={imgsz}", fixed
    return None, fixed


def choose_backend(weights: Path, requested: str, device: str, imgsz: int | None = None) -> BackendChoice:
    """The export to load for `requested` (auto or one of BACKENDS) on `device` ("cpu", "cuda:0", "mps") at
    `imgsz` (None: the model's own size)."""
    given = backend_of(weights)
    if given != "pt":  # the path names an export: it is what the user wants
        if requested not in ("auto", given):
            raise BackendError(
                f"LINEWATCH_MODEL__BACKEND={requested} but LINEWATCH_MODEL__PATH={weights} is a {given} export; "
                f"point the path at the .pt (its exports lie beside it) or set the backend to {given} or auto")
        missing = runtime_missing(given)
        why_not, size = (missing, None) if missing else _size_check(weights, imgsz)
        if why_not:
            raise BackendError(f"cannot run {weights}: {why_not}")
        return BackendChoice(given, weights, f"LINEWATCH_MODEL__PATH names a {_FILE[given]} export", size)
    if requested != "auto":
        path = export_path(weights, requested)
        why_not, size = _usable(path, requested, imgsz)
        if why_not:
            raise BackendError(f"LINEWATCH_MODEL__BACKEND={requested}: {why_not}; make it with: "
                               f"linewatch export --format {requested}")
        return BackendChoice(requested, path, f"LINEWATCH_MODEL__BACKEND={requested}", size)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    skipped: list[str] = []
    for backend in _ORDER[kind]:
        path = export_path(weights, backend)
        why_not, size = _usable(path, backend, imgsz)
        if why_not is None:
            order = " > ".join(_ORDER[kind])
            reason = f"fastest available on {kind} (order {order})"
            return BackendChoice(backend, path, reason + (f"; skipped {', '.join(skipped)}" if skipped else ""),
                                 size)
        skipped.append(f"{backend}: {why_not}")
    raise BackendError(f"no backend can run {weights}: {'; '.join(skipped)}")  # only when torch itself is missing


def weights_sha256(path: Path) -> str:
    """SHA-256 of the weights file; of an OpenVINO folder, over its files' names and contents in name order."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.name.encode() + b"\0")
        with file.open("rb") as weights:
            for block in iter(lambda: weights.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
