"""GenICam pixel formats to BGR: the codes are the GenICam Pixel Format Naming Convention's (PFNC), which Aravis and
every GigE Vision / USB3 Vision camera use. Pure: no camera, no Aravis, so every format is tested here.

Bayer names are the camera's (the colour of the top-left pixel first); OpenCV's `COLOR_Bayer<RGGB>` spellings mean
the same. Mono10/12/16 come in 16-bit containers and are scaled to 8 bits by their significant bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from daemon.frames import Image


@dataclass(frozen=True)
class PixelFormat:
    name: str
    code: int  # PFNC
    bytes_per_pixel: float
    convert: int | None  # the OpenCV conversion to BGR; None: handled here (mono, 16-bit)
    significant_bits: int = 8


PIXEL_FORMATS: dict[int, PixelFormat] = {f.code: f for f in (
    PixelFormat("Mono8", 0x01080001, 1, None),
    PixelFormat("Mono10", 0x01100003, 2, None, 10),
    PixelFormat("Mono12", 0x01100005, 2, None, 12),
    PixelFormat("Mono16", 0x01100007, 2, None, 16),
    PixelFormat("BayerGR8", 0x01080008, 1, cv2.COLOR_BayerGRBG2BGR),
    PixelFormat("BayerRG8", 0x01080009, 1, cv2.COLOR_BayerRGGB2BGR),
    PixelFormat("BayerGB8", 0x0108000A, 1, cv2.COLOR_BayerGBRG2BGR),
    PixelFormat("BayerBG8", 0x0108000B, 1, cv2.COLOR_BayerBGGR2BGR),
    PixelFormat("RGB8", 0x02180014, 3, cv2.COLOR_RGB2BGR),
    PixelFormat("BGR8", 0x02180015, 3, None),
    PixelFormat("YUV422_8", 0x02100032, 2, cv2.COLOR_YUV2BGR_YUYV),  # YUYV
    PixelFormat("YUV422_8_UYVY", 0x0210001F, 2, cv2.COLOR_YUV2BGR_UYVY),
)}
BY_NAME = {f.name: f for f in PIXEL_FORMATS.values()}
# What linewatch asks a camera for, best first, when LINEWATCH_CAMERA__PIXEL_FORMAT is not set: colour the model
# was trained on where the sensor has it, without the camera's own (slower, 3x bigger) debayering.
PREFERRED = ("BayerRG8", "BayerBG8", "BayerGR8", "BayerGB8", "BGR8", "RGB8", "YUV422_8", "Mono8")


def pixel_format(code: int) -> PixelFormat:
    try:
        return PIXEL_FORMATS[code]
    except KeyError:
        raise ValueError(f"pixel format 0x{code:08x} is not supported; supported: {', '.join(BY_NAME)}") from None


def to_bgr(data: bytes | memoryview, width: int, height: int, code: int) -> Image:
    """One frame's bytes (rows may be padded) as an HxWx3 BGR uint8 array. ValueError for a short or odd buffer."""
    fmt = pixel_format(code)
    row = int(width * fmt.bytes_per_pixel)
    if width <= 0 or height <= 0 or len(data) < row * height:
        raise ValueError(f"{fmt.name} frame of {width}x{height} needs {row * height} bytes, got {len(data)}")
    stride = len(data) // height  # a camera may pad each row
    raw = np.frombuffer(data, dtype=np.uint8, count=stride * height).reshape(height, stride)[:, :row]
    if fmt.bytes_per_pixel == 2 and fmt.convert is None:  # 16-bit containers, little-endian
        wide = raw.copy().view("<u2").reshape(height, width)
        return _cvt((wide >> (fmt.significant_bits - 8)).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    if fmt.name == "Mono8":
        return _cvt(raw, cv2.COLOR_GRAY2BGR)
    if fmt.bytes_per_pixel == 3:
        pixels = np.ascontiguousarray(raw).reshape(height, width, 3)
        return pixels if fmt.convert is None else _cvt(pixels, fmt.convert)
    if fmt.bytes_per_pixel == 2:
        return _cvt(raw.reshape(height, width, 2), fmt.convert or 0)
    return _cvt(raw, fmt.convert or 0)


def _cvt(pixels: Image, code: int) -> Image:
    return np.asarray(cv2.cvtColor(np.ascontiguousarray(pixels), code), dtype=np.uint8)
