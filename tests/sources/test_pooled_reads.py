"""OpenCV sources decode into reused arrays (daemon/buffers.py): a frame still held downstream is never written
over by a later read, and frames released are decoded into again."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from daemon.sources.file import FileSource


def _reference(video: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            return frames
        frames.append(image)


def test_frames_held_downstream_keep_their_pixels_while_later_frames_decode(line_video: Path) -> None:
    reference = _reference(line_video)
    source = FileSource(str(line_video), loop=False, realtime=False)
    source.open()
    held = []
    for index in range(len(reference)):
        image = source.read()
        assert image is not None
        image.setflags(write=False)  # as the capture stage hands it on
        if index % 3 == 0:
            held.append((index, image))  # a frame in a hand-off, a defect's best view, a snapshot
        del image
    assert source.read() is None
    source.close()
    for index, image in held:
        assert np.array_equal(image, reference[index]), f"frame {index} was overwritten by a later read"


def test_released_frames_are_decoded_into_again(line_video: Path) -> None:
    source = FileSource(str(line_video), loop=False, realtime=False)
    source.open()
    addresses = set()
    for _ in range(30):
        image = source.read()
        assert image is not None
        addresses.add(image.ctypes.data)
        del image  # inspected and forgotten
    source.close()
    assert len(addresses) <= 2, f"30 frames decoded into {len(addresses)} arrays"
