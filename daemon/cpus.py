"""How many CPUs this process may really use: the container's CPU quota, not the host's core count.

A container limited to 2 CPUs on a 32-core industrial PC still sees 32 cores in os.cpu_count(); 32 torch
threads fighting over a 2-CPU quota are throttled every period and run slower than 2. Read, in order:
- the CPU affinity mask (cpusets, `--cpuset-cpus`);
- cgroup v2 `cpu.max` ("quota period") of this process's cgroup and each parent up to the root;
- cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` as a fallback;
and take the smallest, rounded up to a whole CPU.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CpuLimit:
    count: int
    source: str  # where the figure came from, for the log


def _v2_quota(root: Path) -> tuple[float, str] | None:
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    relative = next((line[3:] for line in lines if line.startswith("0::")), None)
    if relative is None:
        return None
    base = root / "sys/fs/cgroup"
    best: tuple[float, str] | None = None
    node = Path(relative.strip() or "/")
    while True:
        cpu_max = base / str(node).lstrip("/") / "cpu.max"
        try:
            quota, period = cpu_max.read_text().split()[:2]
        except (OSError, ValueError):
            quota = period = ""
        if quota and quota != "max" and float(period) > 0:
            cpus = float(quota) / float(period)
            if best is None or cpus < best[0]:
                best = (cpus, f"cgroup v2 {node}/cpu.max")
        if node == node.parent:
            return best
        node = node.parent


def _v1_quota(root: Path) -> tuple[float, str] | None:
    for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        folder = root / "sys/fs/cgroup" / name
        try:
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            period = int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            return quota / period, f"cgroup v1 {name}/cpu.cfs_quota_us"
    return None


def cpu_limit(root: Path = Path("/"), affinity: int | None = None) -> CpuLimit:
    """The CPUs this process may use (>= 1). `root` and `affinity` exist for tests with a fake tree."""
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = CpuLimit(max(1, affinity), "CPU affinity")
    quota = _v2_quota(root) or _v1_quota(root)
    if quota is not None and math.ceil(quota[0]) < limit.count:
        limit = CpuLimit(max(1, math.ceil(quota[0])), quota[1])
    return limit
