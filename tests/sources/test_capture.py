"""Sources and the capture stage on real files and the real synthetic generator (no camera needed)."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest

from daemon.backoff import Backoff
from daemon.frames import END_OF_STREAM, Frame
from daemon.handoff import DropPolicy, Handoff
from daemon.sources.base import SourceFatal
from daemon.sources.capture import CameraState, CameraStatus, CaptureStage
from daemon.sources.file import FileSource
from daemon.sources.synthetic import SyntheticSource
from daemon.sources.v4l2 import V4l2Source
from tests.conftest import write_line_video


def drain(handoff: Handoff[Frame], limit: int = 10_000) -> list[Frame]:
    frames = []
    while (item := handoff.get(30.0)) is not END_OF_STREAM:
        assert item is not None, "the capture stage stalled"
        frames.append(item)
        assert len(frames) <= limit
    return frames


def run_capture(source: object, policy: DropPolicy = DropPolicy.WAIT) -> tuple[list[Frame], list[CameraStatus]]:
    stop = threading.Event()
    handoff: Handoff[Frame] = Handoff("t", 4, policy, stop)
    statuses: list[CameraStatus] = []
    stage = CaptureStage("cam", source, handoff, stop, backoff=Backoff(0.01, 0.05), stall_timeout_s=5.0,  # type: ignore[arg-type]
                         on_status=statuses.append)
    stage.start()
    frames = drain(handoff)
    assert stage.join(10.0)
    return frames, statuses


def test_a_file_is_read_whole_with_numbered_timestamped_frames_then_ends(tmp_path: Path) -> None:
    video = write_line_video(tmp_path / "v.avi", seed=5, frames=12, width=320, height=240)
    frames, statuses = run_capture(FileSource(str(video), loop=False, realtime=False))
    assert [f.seq for f in frames] == list(range(12))
    assert all(f.width == 320 and f.height == 240 for f in frames)
    assert all(a.captured_mono <= b.captured_mono for a, b in itertools.pairwise(frames))
    assert all(f.captured_utc.tzinfo is not None for f in frames)
    assert not frames[0].image.flags.writeable, "frames crossing threads must be read-only"
    assert [s.state for s in statuses] == [CameraState.ONLINE, CameraState.OFFLINE]
    assert statuses[-1].reason == "end of stream"


def test_a_looping_file_starts_again_at_its_end(tmp_path: Path) -> None:
    video = write_line_video(tmp_path / "v.avi", seed=5, frames=5, width=320, height=240)
    source = FileSource(str(video), loop=True, realtime=False)
    source.open()
    images = [source.read() for _ in range(12)]
    source.close()
    assert all(image is not None for image in images)
    # Frame 5 is frame 0 again (the same JPEG decoded twice is the same image).
    assert images[5] is not None and images[0] is not None
    assert (images[5] == images[0]).all()


def test_the_synthetic_stream_ends_after_its_frame_count_and_frame_seq_is_the_render_index() -> None:
    source = SyntheticSource("synthetic://line?frames=7&realtime=false&width=320&height=240&seed=9")
    frames, _ = run_capture(source)
    assert [f.seq for f in frames] == list(range(7))
    from daemon.synthetic.line import LineParams, SyntheticLine

    line = SyntheticLine(LineParams.from_url("synthetic://line?width=320&height=240&seed=9"))
    assert (frames[3].image == line.render(3).image).all()


def test_a_missing_v4l2_device_is_a_fatal_error_that_names_it() -> None:
    # No V4L2 device node can exist on this machine: this is the error path only.
    source = V4l2Source("/dev/video97", fourcc="MJPG", width=640, height=480, fps=30, exposure=None,
                        wait_for_device=False)
    with pytest.raises(SourceFatal, match="/dev/video97 does not exist"):
        source.open()
    frames, statuses = run_capture(source)
    assert frames == []
    assert statuses[-1].state is CameraState.OFFLINE and "/dev/video97" in statuses[-1].reason
