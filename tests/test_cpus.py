"""CPU quota from a fake cgroup tree: no container with a CPU limit can be made here, so the tree is faked
(the files the kernel would show, in a temporary folder); the parsing and the walk up the tree are real."""

from __future__ import annotations

from pathlib import Path

from daemon.cpus import cpu_limit


def fake_tree(root: Path, cgroup_line: str, files: dict[str, str]) -> Path:
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup_line + "\n")
    for relative, text in files.items():
        path = root / "sys/fs/cgroup" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return root


def test_a_v2_quota_of_a_container_limits_the_threads_not_the_host_core_count(tmp_path: Path) -> None:
    # docker run --cpus=2.5 on a 32-core host: cpu.max "250000 100000" at the container's cgroup root
    root = fake_tree(tmp_path, "0::/", {"cpu.max": "250000 100000"})
    limit = cpu_limit(root, affinity=32)
    assert limit.count == 3 and "cgroup v2" in limit.source


def test_the_tightest_v2_quota_up_the_tree_wins(tmp_path: Path) -> None:
    # systemd: the service has no limit, its slice allows 1.5 CPUs
    root = fake_tree(tmp_path, "0::/system.slice/linewatch.service", {
        "system.slice/linewatch.service/cpu.max": "max 100000",
        "system.slice/cpu.max": "150000 100000",
        "cpu.max": "max 100000",
    })
    assert cpu_limit(root, affinity=16).count == 2


def test_no_quota_means_the_affinity_mask(tmp_path: Path) -> None:
    root = fake_tree(tmp_path, "0::/", {"cpu.max": "max 100000"})
    limit = cpu_limit(root, affinity=6)
    assert limit.count == 6 and limit.source == "CPU affinity"


def test_a_quota_above_the_cpuset_does_not_raise_the_count(tmp_path: Path) -> None:
    root = fake_tree(tmp_path, "0::/", {"cpu.max": "800000 100000"})
    assert cpu_limit(root, affinity=2).count == 2


def test_cgroup_v1_is_the_fallback(tmp_path: Path) -> None:
    root = fake_tree(tmp_path, "12:cpu,cpuacct:/docker/abc", {
        "cpu,cpuacct/cpu.cfs_quota_us": "50000",
        "cpu,cpuacct/cpu.cfs_period_us": "100000",
    })
    limit = cpu_limit(root, affinity=8)
    assert limit.count == 1 and "cgroup v1" in limit.source


def test_an_unlimited_v1_quota_is_minus_one(tmp_path: Path) -> None:
    root = fake_tree(tmp_path, "12:cpu:/", {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"})
    assert cpu_limit(root, affinity=4).count == 4
