"""The synthetic line is a pure, seeded function of (params, index), and its URL errors are actionable."""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np
import pytest

from daemon.synthetic.line import CLASS_NAMES, LineParams, SyntheticLine

INDICES = (0, 1, 37, 500, 12_345)


def test_same_seed_renders_byte_identical_frames_and_truth_in_any_order() -> None:
    params = LineParams(seed=7, defect_rate=0.6)
    forward, backward = SyntheticLine(params), SyntheticLine(params)
    first = [forward.render(i) for i in INDICES]
    second = [backward.render(i) for i in reversed(INDICES)][::-1]  # other order, other sprite-cache state
    for a, b in zip(first, second, strict=True):
        assert a.image.tobytes() == b.image.tobytes()
        assert a.defects == b.defects
        assert a.parts == b.parts


def test_truth_without_image_equals_render_truth() -> None:
    line = SyntheticLine(LineParams(seed=3, defect_rate=0.6))
    for index in INDICES:
        frame = line.render(index)
        assert line.truth(index) == (frame.parts, frame.defects)


def test_different_seeds_give_different_scenes() -> None:
    a, b = SyntheticLine(LineParams(seed=1)), SyntheticLine(LineParams(seed=2))
    for index in (0, 400):
        fa, fb = a.render(index), b.render(index)
        assert fa.image.tobytes() != fb.image.tobytes()
        layout_a = [(p.kind, p.x1, p.y1, p.x2, p.y2) for p in fa.parts]
        assert layout_a != [(p.kind, p.x1, p.y1, p.x2, p.y2) for p in fb.parts]


def test_frame_is_read_only_bgr_of_the_configured_size() -> None:
    frame = SyntheticLine(LineParams(width=320, height=240)).render(5)
    assert frame.image.shape == (240, 320, 3)
    assert frame.image.dtype == np.uint8
    assert not frame.image.flags.writeable
    assert frame.index == 5


def test_defects_lie_on_defective_parts_inside_the_frame() -> None:
    params = LineParams(seed=11, defect_rate=0.7)
    line = SyntheticLine(params)
    seen = set()
    for index in range(0, 4000, 40):
        frame = line.render(index)
        parts = {p.part_id: p for p in frame.parts}
        for d in frame.defects:
            part = parts[d.part_id]
            assert part.defective
            assert d.label == CLASS_NAMES[d.class_id]
            assert 0 <= d.x1 < d.x2 <= params.width and 0 <= d.y1 < d.y2 <= params.height
            assert part.x1 <= d.x1 and d.x2 <= part.x2 and part.y1 <= d.y1 and d.y2 <= part.y2
            assert params.min_defect_px // 2 <= max(d.x2 - d.x1, d.y2 - d.y1) <= params.max_defect_px + 8
            seen.add(d.label)
    assert seen == set(CLASS_NAMES)


def test_parts_move_right_at_the_configured_speed_with_stable_ids() -> None:
    line = SyntheticLine(LineParams(speed=6))
    before, after = line.render(100), line.render(110)
    later = {p.part_id: p for p in after.parts}
    moved = [later[p.part_id].x2 - p.x2 for p in before.parts if p.part_id in later and p.x2 + 60 <= 640]
    assert moved and all(dx == 60 for dx in moved)


def test_defect_rate_bounds_and_part_kinds() -> None:
    clean = SyntheticLine(LineParams(defect_rate=0.0))
    assert all(not clean.render(i).defects for i in range(0, 3000, 100))
    plates = SyntheticLine(LineParams(defect_rate=1.0, parts="plates"))
    frames = [plates.render(i) for i in range(0, 3000, 100)]
    assert all(p.kind == "plate" and p.defective for f in frames for p in f.parts)
    assert {d.label for f in frames for d in f.defects} <= {"scratch", "dent", "stain"}


def test_url_round_trip_parses_every_parameter() -> None:
    url = (
        "synthetic://line?fps=10&width=800&height=600&speed=4.5&parts=pcbs&defect_rate=0.25&min_defect_px=12"
        "&max_defect_px=40&seed=9&noise=2&blur=0&lighting=0.1&frames=300&realtime=false"
    )
    params = LineParams.from_url(url)
    assert params == LineParams(
        fps=10,
        width=800,
        height=600,
        speed=4.5,
        parts="pcbs",
        defect_rate=0.25,
        min_defect_px=12,
        max_defect_px=40,
        seed=9,
        noise=2,
        blur=0,
        lighting=0.1,
        frames=300,
        realtime=False,
    )
    assert LineParams.from_url(params.to_url()) == params
    assert LineParams.from_url("synthetic://line") == LineParams()


@pytest.mark.parametrize(
    ("url", "named", "hint"),
    [
        ("synthetic://line?colour=red", "'colour'", "accepted: fps, width"),
        ("synthetic://line?fps=fast", "'fps'", "a number"),
        ("synthetic://line?fps=0", "'fps'", "> 0"),
        ("synthetic://line?seed=-1", "'seed'", ">= 0"),
        ("synthetic://line?seed=1.5", "'seed'", "an integer"),
        ("synthetic://line?parts=bolts", "'parts'", "plates, pcbs or both"),
        ("synthetic://line?defect_rate=1.5", "'defect_rate'", "0..1"),
        ("synthetic://line?min_defect_px=30&max_defect_px=20", "'max_defect_px'", "30 (min_defect_px)"),
        ("synthetic://line?realtime=maybe", "'realtime'", "true/false"),
        ("synthetic://line?speed=nan", "'speed'", "a number"),
        ("synthetic://line?seed=1&seed=2", "'seed'", "more than once"),
    ],
)
def test_bad_url_names_the_parameter_and_what_is_accepted(url: str, named: str, hint: str) -> None:
    with pytest.raises(ValueError) as caught:
        LineParams.from_url(url)
    message = str(caught.value)
    assert named in message and hint in message
    assert "\n" not in message


def test_url_of_another_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="synthetic://line"):
        LineParams.from_url("synthetic://belt?seed=1")


def test_parsing_a_synthetic_url_needs_no_opencv() -> None:
    """The settings check a camera URL at load time; a synthetic:// one must not pull OpenCV in for that."""
    import subprocess
    import sys

    code = ("import sys; from daemon.sources.url import parse_camera_url; "
            "u = parse_camera_url('synthetic://line?fps=30&realtime=off'); "
            "assert not u.realtime; print('cv2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
