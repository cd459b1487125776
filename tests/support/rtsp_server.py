#!/usr/bin/python3
"""Serve an H.264 RTSP stream on 127.0.0.1 for the daemon's integration tests.

Runs under Debian's /usr/bin/python3 (python3-gi + gir1.2-gst-rtsp-server-1.0),
not the venv: PyGObject is not installable from PyPI without a compiler and the
GObject-introspection data lives with the system packages.

The source is either a moving test pattern or a video file looped forever. No
overlay elements are used: text/time overlays need fonts the CI may lack.

Prints exactly one line ``READY rtsp://127.0.0.1:PORT/MOUNT`` on stdout once the
server listens; ``--port 0`` picks a free port (read it from that line). Exit
codes: 0 after SIGTERM/SIGINT, 2 for a bad file, 3 when the port cannot be bound.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PREROLL_TIMEOUT_S = 10


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mount", default="/cam")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--user", help="require RTSP basic authentication with this user (and --password)")
    parser.add_argument("--password", default="")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--file", help="video file to decode and loop forever")
    source.add_argument("--pattern", default="ball", help="videotestsrc pattern (default: ball, which moves)")
    args = parser.parse_args(argv)
    if not args.mount.startswith("/"):
        args.mount = "/" + args.mount
    return args


def raw_caps(args: argparse.Namespace) -> str:
    return f"video/x-raw,format=I420,width={args.width},height={args.height},framerate={args.fps}/1"


def encoder(args: argparse.Namespace) -> str:
    # A keyframe every second lets a client that (re)connects decode within ~1 s;
    # zerolatency drops B-frames and lookahead, as an IP camera would.
    return (
        f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} bitrate=1500 threads=1 "
        "! video/x-h264,profile=baseline "
        "! rtph264pay name=pay0 pt=96 config-interval=1"
    )


class FileFeeder:
    """Decodes ``path`` in real time into an intervideosink channel, seeking back at EOS.

    The RTSP media pipeline reads the channel with intervideosrc. Keeping the file
    in its own pipeline means looping is a plain seek on a bus we own, instead of
    fighting the RTSP media's EOS handling, and every client sees one timeline.
    """

    def __init__(self, path: str, args: argparse.Namespace, channel: str, loop: GLib.MainLoop) -> None:
        self._loop = loop
        self.failed: str | None = None
        self.pipeline = Gst.parse_launch(
            f"filesrc name=file ! decodebin ! videoconvert ! videoscale ! videorate "
            f"! {raw_caps(args)} ! intervideosink channel={channel}"
        )
        # Set as a property, not in the launch string, so no quoting rules apply to the path.
        self.pipeline.get_by_name("file").set_property("location", path)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self._on_message)

    def preroll(self) -> None:
        """Raise RuntimeError unless the file decodes far enough to produce a frame."""
        self.pipeline.set_state(Gst.State.PAUSED)
        msg = self.pipeline.get_bus().timed_pop_filtered(
            PREROLL_TIMEOUT_S * Gst.SECOND, Gst.MessageType.ASYNC_DONE | Gst.MessageType.ERROR
        )
        if msg is None:
            raise RuntimeError(f"file did not preroll within {PREROLL_TIMEOUT_S}s")
        if msg.type == Gst.MessageType.ERROR:
            err, debug = msg.parse_error()
            raise RuntimeError(f"{err.message} ({debug})")

    def play(self) -> None:
        self.pipeline.set_state(Gst.State.PLAYING)

    def stop(self) -> None:
        self.pipeline.set_state(Gst.State.NULL)

    def _on_message(self, bus: Gst.Bus, msg: Gst.Message) -> None:
        if msg.type == Gst.MessageType.EOS:
            self.pipeline.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
        elif msg.type == Gst.MessageType.ERROR:
            err, debug = msg.parse_error()
            self.failed = f"{err.message} ({debug})"
            print(f"file source error: {self.failed}", file=sys.stderr, flush=True)
            self._loop.quit()


def require_basic_auth(server: GstRtspServer.RTSPServer, factory: GstRtspServer.RTSPMediaFactory, user: str,
                       password: str) -> None:
    """Only `user` with `password` may play the mount; anyone else gets 401 Unauthorized, as a camera does."""
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    server.set_auth(auth)
    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_permission_for_role("viewer", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
    permissions.add_permission_for_role("viewer", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
    factory.set_permissions(permissions)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    Gst.init(None)
    loop = GLib.MainLoop()

    feeder: FileFeeder | None = None
    if args.file:
        if not os.path.isfile(args.file):
            print(f"no such file: {args.file}", file=sys.stderr, flush=True)
            return 2
        channel = f"linewatch-rtsp-{os.getpid()}"
        feeder = FileFeeder(args.file, args, channel, loop)
        try:
            feeder.preroll()
        except RuntimeError as exc:
            print(f"cannot decode {args.file}: {exc}", file=sys.stderr, flush=True)
            feeder.stop()
            return 2
        source = f"intervideosrc channel={channel} ! {raw_caps(args)}"
    else:
        source = f"videotestsrc is-live=true pattern={args.pattern} ! {raw_caps(args)}"

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( {source} ! {encoder(args)} )")
    # One pipeline for all clients: the daemon plus a test's own probe can watch at once.
    factory.set_shared(True)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    if args.user is not None:
        require_basic_auth(server, factory, args.user, args.password)
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        if feeder is not None:
            feeder.stop()
        return 3

    def on_signal() -> bool:
        loop.quit()
        return False  # GLib.SOURCE_REMOVE: one signal is enough

    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, on_signal)

    if feeder is not None:
        feeder.play()
    print(f"READY rtsp://127.0.0.1:{server.get_bound_port()}{args.mount}", flush=True)
    loop.run()
    if feeder is not None:
        feeder.stop()
        if feeder.failed is not None:
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
