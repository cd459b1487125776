"""The machine a benchmark ran on, named in every result it saves: CPU model, CPUs, vector flags, GPU."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

_FLAGS = ("avx2", "avx512f", "avx512_vnni", "amx_tile", "neon", "asimd")


def describe() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model") and value.strip():
                model = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags |= set(value.split())
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {"cpu_model": model, "cpus": os.cpu_count(), "arch": platform.machine(),
            "cpu_flags": sorted(flag for flag in _FLAGS if flag in flags), "gpu": gpu}
