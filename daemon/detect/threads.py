"""How many inferences run at once (streams), and on how many CPU threads each.

On a CPU, one inference spread over every core spends much of its time keeping its threads in step, and any
other thread of the daemon (a capture decoding the next frame, the event stage, the publisher) that takes a
core from one of them holds the whole inference up. Independent inferences on one thread each have neither
cost. Measured on this project's 2-core x86-64 CPU, the raw model on pre-letterboxed tensors, one inference at a
time on its fastest thread count (2) against two side by side on one thread each (bench/results/efficiency.md):

    backend    one at a time    two side by side
    PyTorch     45 fps           70 fps
    ONNX       112 fps          161 fps
    OpenVINO   206 fps          308 fps

So on a CPU the detector runs `streams` inferences side by side, each on its own copy of the model (Ultralytics'
predictor is not thread-safe, and neither is an OpenVINO compiled model's own request), each on `threads`
threads. A GPU runs one stream: its batches are already parallel.

ONNX Runtime and OpenVINO size their thread pools from the host's cores, not the container's CPU quota, and
OpenVINO pins its threads to cores: two copies on one thread each, pinned, ran at 0.63x one copy on every core,
and unpinned at 1.73x (bench/results/openvino_pinning.md). `limit_runtime_threads` rebuilds each runtime's
session with the thread count given and no pinning.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

# Every OpenVINO Core the detector touched, kept for the life of the process. OpenVINO (2026.4) points the calling
# thread's signal stack (sigaltstack) at memory of its own when a Core is made, and restores the previous one when
# it is released: Cores released in the order they were made leave it pointing at freed memory, and the next
# signal (SIGTERM: how systemd and a container stop the daemon) then crashes the process with SIGSEGV. Ultralytics
# makes a Core per copy of the model; none is ever released.
_KEPT_CORES: list[Any] = []

MAX_AUTO_STREAMS = 4  # more copies of the model than this only cost memory: one camera rarely has more in flight


def default_streams(device: str, cpus: int, threads: int | None = None) -> int:
    """As many streams as fill the CPU quota at `threads` each (one each when not set), at most MAX_AUTO_STREAMS;
    one on a GPU (or MPS). A configuration that set only the thread count (from before streams: THREADS=3 on
    4 CPUs) so keeps one stream, rather than running 4 x 3 threads on 4 CPUs."""
    return max(1, min(MAX_AUTO_STREAMS, cpus // (threads or 1))) if device == "cpu" else 1


def default_threads(cpus: int, streams: int) -> int:
    """Threads of each stream. One stream leaves a CPU to the pipeline's own threads: on 2 CPUs, torch on both ran
    the whole daemon at 21 fps against 35 on one (bench/results/pipeline_threads.md). Several share the quota."""
    return max(1, cpus - 1) if streams == 1 else max(1, cpus // streams)


def limit_runtime_threads(loaded: Any, weights: Path, threads: int) -> str | None:
    """Rebuild a CPU ONNX Runtime session or OpenVINO compiled model of Ultralytics' loaded model (AutoBackend)
    on `threads` threads, unpinned. Returns the runtime changed ("onnxruntime", "openvino"), or None (a .pt, whose
    threads are torch's process-wide count, or a GPU runtime)."""
    backend = getattr(loaded, "backend", None)
    if backend is None or str(getattr(loaded, "device", "cpu")) != "cpu":
        return None
    if getattr(backend, "session", None) is not None and getattr(backend, "format", "") == "onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        backend.session = onnxruntime.InferenceSession(str(weights), options, providers=["CPUExecutionProvider"])
        return "onnxruntime"
    compile_model = getattr(backend, "compile_model", None)
    if (getattr(backend, "ov_compiled_model", None) is not None and isinstance(compile_model, partial)
            and compile_model.keywords.get("device_name") == "CPU"):  # not AUTO (an iGPU present): its own pools
        core = compile_model.func.__self__  # type: ignore[attr-defined]  # Ultralytics' Core: no new one (above)
        _KEPT_CORES.append(core)
        config = {**compile_model.keywords.get("config", {}), "INFERENCE_NUM_THREADS": threads,
                  "ENABLE_CPU_PINNING": False}
        xml = weights if weights.is_file() else next(weights.glob("*.xml"))
        model = core.read_model(model=str(xml), weights=str(xml.with_suffix(".bin")))
        if getattr(backend, "read_model", None) is not None:  # Ultralytics runs this one at fixed shapes
            model.reshape(backend.ov_compiled_model.input().get_partial_shape())
        rebuilt = partial(core.compile_model, device_name="CPU", config=config)
        backend.ov_compiled_model = rebuilt(model)
        backend.compile_model = rebuilt  # only once it compiled: a refusal leaves Ultralytics' own in place
        return "openvino"
    return None
