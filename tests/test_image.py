"""The container image builds and runs: scripts/image-check.sh (buildah, no Docker engine needed).

Builds the CPU variant of docker/Dockerfile on a debootstrapped bookworm base, runs the image's entrypoint
as its non-root user on a read-only root (--version, check-config, doctor, a 20 s run against a real
mosquitto), compares its defect events with the host .venv's on the same finite stream, checks that a new
container drains the outbox an old one left, and reports the image size. Minutes, root only: marked `image`.

The gzip-compressed size takes minutes more and is skipped here unless IMAGE_CHECK_SKIP_SIZE is set (to
empty, to measure it): `IMAGE_CHECK_SKIP_SIZE= scripts/test.sh -m image -s`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "image-check.sh"

pytestmark = [pytest.mark.image, pytest.mark.integration]


def test_the_image_builds_and_runs() -> None:
    if os.geteuid() != 0:
        pytest.skip("the image check needs root (buildah vfs storage, debootstrap, chroot)")
    missing = [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing {missing}: apt-get install buildah debootstrap (scripts/test.sh does)")
    env = dict(os.environ)
    env.setdefault("IMAGE_CHECK_SKIP_SIZE", "1")
    result = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=1800)
    print(result.stdout[-20000:])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
    summary = result.stdout.split("== image check summary", 1)
    assert len(summary) == 2, result.stdout[-6000:]
    assert "FAIL" not in summary[1]
