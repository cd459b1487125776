#!/usr/bin/python3
"""A live RTSP camera that stamps the wall-clock time into every frame, for bench/freshness.py.

Runs under Debian's /usr/bin/python3 (python3-gi + gir1.2-gst-rtsp-server-1.0), like the tests' RTSP server.
It loops raw BGR frames from a file (640x480 unless --width/--height say otherwise, made by freshness.py or
capacity.py from the synthetic line) at --fps, and
writes into the top 32 rows of each frame, just before it is encoded ("glass"):

    64 blocks of 10x16 px, white = 1: bits 0-19 the frame counter, bits 20-63 the time in ms since the epoch;
    rows 0-15 and 16-31 carry the same bits, so a reader can reject a block the encoder blurred.

Every client gets its own pipeline (not shared), whose counter starts at 0 when it starts to play; each
pushed frame's (counter, ms) is appended to --log, so the glass time of a reader's n-th frame is known even
when the reader never sees the pixels (the daemon reports only its frame_seq). Pure Python, no numpy: the
system interpreter may not have it.

Prints ``READY rtsp://127.0.0.1:PORT/cam`` once listening; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

WIDTH, HEIGHT, BITS, BLOCK_W, BLOCK_H = 640, 480, 64, 10, 16  # the stamp is 64 x 10 px wide: WIDTH


def stamp_rows(counter: int, ms: int, width: int = WIDTH) -> bytes:
    value = (counter & 0xFFFFF) | (ms << 20)
    white, black = b"\xff" * (BLOCK_W * 3), b"\x00" * (BLOCK_W * 3)
    row = b"".join(white if value >> bit & 1 else black for bit in range(BITS)) + b"\x00" * ((width - WIDTH) * 3)
    return row * (2 * BLOCK_H)


class Feeder:
    def __init__(self, frames: list[bytes], fps: int, log_path: str, width: int = WIDTH) -> None:
        self.frames, self.period_ns, self.width = frames, Gst.SECOND // fps, width
        self.log = open(log_path, "a", buffering=1)  # noqa: SIM115 (one line per frame, flushed)
        self.lock = threading.Lock()

    def configure(self, _factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        source = media.get_element().get_child_by_name("src")
        state = {"counter": 0, "next": None}
        source.connect("need-data", self._need_data, state)

    def _need_data(self, source: Gst.Element, _length: int, state: dict[str, int | float | None]) -> None:
        now = time.monotonic()
        due = state["next"] if state["next"] is not None else now
        if due > now:  # type: ignore[operator]
            time.sleep(due - now)  # type: ignore[operator]
        counter = int(state["counter"])  # type: ignore[arg-type]
        ms = int(time.time() * 1000)
        frame = self.frames[counter % len(self.frames)]
        data = stamp_rows(counter, ms, self.width) + frame[2 * BLOCK_H * self.width * 3:]
        buffer = Gst.Buffer.new_wrapped(data)
        buffer.pts = counter * self.period_ns
        buffer.duration = self.period_ns
        with self.lock:
            self.log.write(f"{counter} {ms}\n")
        state["counter"] = counter + 1
        state["next"] = max(now, float(due)) + self.period_ns / Gst.SECOND  # type: ignore[arg-type]
        source.emit("push-buffer", buffer)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", required=True, help="raw BGR frames of --width x --height, back to back")
    parser.add_argument("--width", type=int, default=WIDTH, help="at least 640 (the stamp's width)")
    parser.add_argument("--height", type=int, default=HEIGHT)
    parser.add_argument("--log", required=True, help="where each pushed frame's 'counter ms' line goes")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    width, height = max(WIDTH, args.width), args.height
    size = width * height * 3
    with open(args.frames, "rb") as raw:
        blob = raw.read()
    frames = [blob[i:i + size] for i in range(0, len(blob) - size + 1, size)]
    Gst.init(None)
    loop = GLib.MainLoop()
    feeder = Feeder(frames, args.fps, args.log, width)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( appsrc name=src is-live=true format=time do-timestamp=false "
        f"caps=video/x-raw,format=BGR,width={width},height={height},framerate={args.fps}/1 "
        f"! videoconvert ! video/x-raw,format=I420 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} bitrate=4000 threads=1 "
        f"! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_shared(False)
    factory.connect("media-configure", feeder.configure)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 3
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, lambda: loop.quit() or False)
    print(f"READY rtsp://127.0.0.1:{server.get_bound_port()}/cam", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
