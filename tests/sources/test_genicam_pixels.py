"""GenICam pixel formats to BGR, each from bytes laid out as a camera sends them (no camera needed); the PFNC codes
checked against Aravis' own where it is installed."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.sources.genicam_pixels import BY_NAME, PIXEL_FORMATS, to_bgr

H, W = 8, 12
rng = np.random.default_rng(3)
BGR = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
# A scene of flat colour blocks, so that debayering (which interpolates) is exact inside each block
BLOCKS = np.kron(rng.integers(0, 256, (2, 3, 3), dtype=np.uint8), np.ones((4, 4, 1), dtype=np.uint8))


def mosaic(bgr: np.ndarray, pattern: str) -> bytes:
    """What a Bayer sensor sends: one colour per pixel, `pattern` naming the top-left 2x2 (e.g. RGGB)."""
    channel = {"B": 0, "G": 1, "R": 2}
    out = np.zeros(bgr.shape[:2], dtype=np.uint8)
    for index, colour in enumerate(pattern):
        dy, dx = divmod(index, 2)
        out[dy::2, dx::2] = bgr[dy::2, dx::2, channel[colour]]
    return out.tobytes()


def test_mono8_becomes_three_equal_channels() -> None:
    gray = BGR[:, :, 0]
    image = to_bgr(gray.tobytes(), W, H, BY_NAME["Mono8"].code)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert (image == gray[:, :, None]).all()


@pytest.mark.parametrize(("name", "shift"), [("Mono10", 2), ("Mono12", 4), ("Mono16", 8)])
def test_wide_mono_keeps_its_eight_most_significant_bits(name: str, shift: int) -> None:
    wide = (BGR[:, :, 1].astype("<u2") << shift) | 0x1  # low bits the scaling drops
    image = to_bgr(wide.tobytes(), W, H, BY_NAME[name].code)
    assert (image[:, :, 2] == BGR[:, :, 1]).all()


def test_rgb8_and_bgr8_give_the_same_picture() -> None:
    assert (to_bgr(BGR[:, :, ::-1].tobytes(), W, H, BY_NAME["RGB8"].code) == BGR).all()
    assert (to_bgr(BGR.tobytes(), W, H, BY_NAME["BGR8"].code) == BGR).all()


@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_each_bayer_pattern_is_demosaiced_to_the_right_colours(pattern: str) -> None:
    name = f"Bayer{pattern[0]}{pattern[1]}8"
    image = to_bgr(mosaic(BLOCKS, pattern), W, H, BY_NAME[name].code)
    inner = (slice(1, 3), slice(1, 3))  # inside the first block, away from edges and neighbours
    assert (image[inner] == BLOCKS[inner]).all(), (pattern, image[inner][0, 0], BLOCKS[0, 0])


@pytest.mark.parametrize("name", ["YUV422_8", "YUV422_8_UYVY"])
def test_yuv422_with_neutral_chroma_is_a_grey_of_its_luma(name: str) -> None:
    luma = np.full((H, W), 140, dtype=np.uint8)
    chroma = np.full_like(luma, 128)
    pairs = [luma, chroma] if name == "YUV422_8" else [chroma, luma]  # Y0 U Y1 V … or U Y0 V Y1 …
    image = to_bgr(np.stack(pairs, axis=-1).tobytes(), W, H, BY_NAME[name].code)
    assert (image == image[:, :, :1]).all(), "no colour cast"
    assert np.abs(image.astype(int) - round((140 - 16) * 255 / 219)).max() <= 1  # BT.601 video range


def test_padded_rows_are_cropped_to_the_image() -> None:
    gray = BGR[:, :, 2]
    padded = np.concatenate([gray, np.full((H, 4), 255, np.uint8)], axis=1)
    assert (to_bgr(padded.tobytes(), W, H, BY_NAME["Mono8"].code)[:, :, 0] == gray).all()


def test_a_short_buffer_or_an_unknown_format_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="needs 96 bytes, got 95"):
        to_bgr(bytes(95), W, H, BY_NAME["Mono8"].code)
    with pytest.raises(ValueError, match="0x01234567 is not supported"):
        to_bgr(bytes(96), W, H, 0x01234567)


def test_the_codes_are_aravis_own() -> None:
    """The PFNC codes above, as Aravis defines them (where Aravis is installed)."""
    pytest.importorskip("gi")
    from daemon.sources.base import SourceFatal
    from daemon.sources.genicam_lib import load_aravis

    try:
        arv = load_aravis()
    except SourceFatal as exc:
        pytest.skip(str(exc))
    names = {"Mono8": "MONO_8", "Mono10": "MONO_10", "Mono12": "MONO_12", "Mono16": "MONO_16",
             "BayerGR8": "BAYER_GR_8", "BayerRG8": "BAYER_RG_8", "BayerGB8": "BAYER_GB_8", "BayerBG8": "BAYER_BG_8",
             "RGB8": "RGB_8_PACKED", "BGR8": "BGR_8_PACKED", "YUV422_8": "YUV_422_YUYV_PACKED",
             "YUV422_8_UYVY": "YUV_422_PACKED"}
    assert set(names) == set(BY_NAME)
    for name, constant in names.items():
        assert getattr(arv, f"PIXEL_FORMAT_{constant}") == BY_NAME[name].code, name
    assert len(PIXEL_FORMATS) == len(BY_NAME)
