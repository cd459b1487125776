"""genicam://[serial|device id|address] : a GigE Vision or USB3 Vision camera through Aravis.

Trigger modes (LINEWATCH_CAMERA__TRIGGER):
  free_run   the camera streams at its frame rate (LINEWATCH_CAMERA__FPS, else its own);
  software   linewatch fires the camera once per frame of an inspection job (`fire`), so every frame it returns
             belongs to a known job: `take_fired` says which, and the job's window is exact;
  hardware   the camera exposes on its line input (LINEWATCH_CAMERA__TRIGGER_SOURCE, default Line0); linewatch
             waits for the frames and the job stage matches them to jobs by time and count.

A triggered camera is silent between parts. `read` then returns IDLE every quarter second, after checking that the
camera still answers (a unicast discovery at most once a second: it never waits behind Aravis' control channel,
whose commands to a camera that is gone take 2.5 s each), so a camera that dies between parts is noticed too. A
GigE Vision camera that dropped linewatch as its controller (its heartbeat timed out: this host stalled for about
3 s, or another application took the camera) still answers, takes triggers and sends nothing; that is noticed
within a quarter second too, and the camera is reopened. A
frame the camera sent incomplete (lost packets) is dropped and counted (`take_lost`): the capture stage leaves a gap
in the frame numbers, and the job that needed it is never a pass.

Only the capture thread calls open/read/close; `fire` is thread-safe.
"""

from __future__ import annotations

import collections
import enum
import importlib
import threading
import time
from dataclasses import dataclass
from typing import Any

from daemon.frames import Image
from daemon.logs import get_logger
from daemon.sources.base import IDLE, Fired, Idle, SourceFatal, SourceUnavailable
from daemon.sources.genicam_lib import GenicamCamera, discover, gige_answers, load_aravis
from daemon.sources.genicam_pixels import BY_NAME, PIXEL_FORMATS, PREFERRED, to_bgr

log = get_logger("linewatch.genicam")

IDLE_WAIT_S = 0.25  # a triggered camera's read returns IDLE this often while no frame is due
LINK_CHECK_S = 1.0  # and checks that the camera answers at most this often while it is silent
MAX_SHOTS = 256  # software triggers waiting to be fired (8 open jobs of up to 32 frames)
DISCOVERY_RETRY_S = 0.5
SOCKET_BUFFER_MIN = 1 << 20  # bytes
_STREAM_COUNTS = ("received_packets", "completed_buffers", "failures", "underruns", "missing_packets",
                  "ignored_packets")
GVCP_TIMEOUT_S = 2.5  # Aravis 0.8: a GigE Vision command to a camera that is gone fails after 5 x 500 ms


class TriggerMode(str, enum.Enum):
    FREE_RUN = "free_run"
    SOFTWARE = "software"
    HARDWARE = "hardware"


@dataclass(frozen=True)
class GenicamOptions:
    trigger: TriggerMode = TriggerMode.FREE_RUN
    trigger_source: str = "Line0"  # hardware: the camera's input line
    pixel_format: str | None = None  # None: the camera's own, if supported, else the first of PREFERRED it has
    exposure_us: float | None = None  # None: the camera's own setting (auto exposure left as it is)
    gain_db: float | None = None
    packet_size: int | None = None  # GigE Vision: None negotiates the largest the path carries
    fps: float | None = None  # free run
    width: int | None = None
    height: int | None = None
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0  # a frame due (free run, or fired) must come within this
    buffers: int = 8


class GenicamSource:
    def __init__(self, selector: str, options: GenicamOptions) -> None:
        self.selector = selector
        self.options = options
        self.description = f"genicam {selector or '(first camera)'} trigger={options.trigger.value}"
        self.info: GenicamCamera | None = None  # the camera opened last
        self._camera: Any = None
        self._device: Any = None  # a GigE Vision camera's device: whether we still control it
        self._stream: Any = None
        self._arv: Any = None
        self._glib_error: type[Exception] = Exception
        self._shots: collections.deque[Fired] = collections.deque()
        self._shots_lock = threading.Lock()
        self._wake = threading.Event()
        self._outstanding: tuple[Fired, float] | None = None  # fired, not yet come: (shot, fired at)
        self._fired: Fired | None = None
        self._lost = 0
        self._last_link_check = 0.0
        self._gone = False  # the camera stopped answering: don't talk to it on the way out (2.5 s per command)
        self.captured_mono: float | None = None  # when the frame just read arrived (its first packet)

    @property
    def pace_fps(self) -> float | None:
        return None

    @property
    def native_grace_s(self) -> float:
        """How far past its deadline an open, read or close may run when the camera dies during it: the commands in
        flight each wait out a GigE Vision timeout (the stall watchdog allows for it)."""
        return 3 * GVCP_TIMEOUT_S

    # -- from any thread ----------------------------------------------------------------------------------------
    def fire(self, job_id: str, count: int) -> bool:
        """Software trigger: expose `count` frames for this job, after the shots already waiting. False (nothing
        queued) when the camera is not software-triggered or too many shots wait."""
        if self.options.trigger is not TriggerMode.SOFTWARE:
            return False
        with self._shots_lock:
            if len(self._shots) + count > MAX_SHOTS:
                return False
            self._shots.extend(Fired(job_id, i) for i in range(max(1, count)))
        self._wake.set()
        return True

    # -- the capture thread ---------------------------------------------------------------------------------------
    def take_fired(self) -> Fired | None:
        fired, self._fired = self._fired, None
        return fired

    def take_lost(self) -> int:
        lost, self._lost = self._lost, 0
        return lost

    def open(self) -> None:
        self._arv = arv = load_aravis()
        self._glib_error = importlib.import_module("gi.repository.GLib").Error
        with self._shots_lock:
            self._shots.clear()  # asked for while the camera was away: those jobs were answered unknown already
        deadline = time.monotonic() + self.options.open_timeout_s
        while True:
            seen = discover()
            found = [c for c in seen if c.matches(self.selector)]
            if found or time.monotonic() >= deadline:
                break
            time.sleep(DISCOVERY_RETRY_S)
        if not found:
            serials = ", ".join(c.serial or c.device_id for c in seen) or "none"
            raise SourceUnavailable(f"no GenICam camera {self.selector or '(any)'} found (cameras seen: {serials})")
        self.info = found[0]
        self._gone = False
        try:
            # A GigE Vision camera by its address: Aravis then streams through the interface on the camera's subnet.
            # By id it takes the interface whose discovery answer came last, which on a host that reaches the
            # camera two ways (a second NIC, or loopback beside eth0) may be one the stream never arrives on.
            gige = self.info.protocol == "GigEVision" and bool(self.info.address)
            self._camera = arv.Camera.new(self.info.address if gige else self.info.device_id)
            device = self._camera.get_device()
            self._device = device if isinstance(device, arv.GvDevice) else None
            if self._device is not None and not self._device.is_controller():
                self._gone = True  # it ignores our commands: release it without waiting on them
                raise SourceUnavailable(f"camera {self.info.serial}: another application controls it (a GigE "
                                        "Vision camera takes one controller: close the other viewer)")
            # A controller that died (a crash, a stall past the heartbeat timeout) leaves the camera acquiring,
            # streaming to its old port and with its trigger settings locked: stop it before anything is set.
            self._camera.stop_acquisition()
            self._configure()
            self._start_stream()
        except self._glib_error as exc:
            self._gone = True
            self.close()
            raise SourceUnavailable(f"camera {self.info.serial}: {exc}") from None
        except (SourceFatal, SourceUnavailable):
            self.close()
            raise
        log.info("genicam_open", vendor=self.info.vendor, model=self.info.model, serial=self.info.serial,
                 address=self.info.address, **self.camera_settings())

    def camera_settings(self) -> dict[str, object]:
        """What the open camera reports now (read back from it, not what was asked)."""
        cam = self._camera
        if cam is None:
            return {}
        device = cam.get_device()
        trigger = {"trigger_mode": device.get_string_feature_value("TriggerMode")} \
            if cam.is_feature_available("TriggerMode") else {}
        if trigger.get("trigger_mode") == "On":
            trigger["trigger_source"] = cam.get_trigger_source()
        return {"pixel_format": cam.get_pixel_format_as_string(), "exposure_us": cam.get_exposure_time(),
                "gain_db": cam.get_gain(), "region": list(cam.get_region()),
                "packet_size": cam.gv_get_packet_size() if cam.is_gv_device() else None, **trigger}

    def _configure(self) -> None:
        cam, opts = self._camera, self.options
        available = list(cam.dup_available_pixel_formats_as_strings() or [])
        wanted = opts.pixel_format
        if wanted is None:
            current = cam.get_pixel_format_as_string()
            if current not in BY_NAME:
                wanted = next((name for name in PREFERRED if name in available), None)
                if wanted is None:
                    raise SourceFatal(f"camera offers no pixel format linewatch reads ({', '.join(available)}); "
                                      f"supported: {', '.join(BY_NAME)}")
        if wanted is not None:
            if wanted not in available:
                raise SourceFatal(f"LINEWATCH_CAMERA__PIXEL_FORMAT={wanted!r}: this camera offers "
                                  f"{', '.join(available)}")
            cam.set_pixel_format_from_string(wanted)
        if opts.width or opts.height:
            x, y, width, height = cam.get_region()
            cam.set_region(x, y, opts.width or width, opts.height or height)
        if opts.exposure_us is not None:
            self._bounded("exposure (µs)", opts.exposure_us, cam.get_exposure_time_bounds())
            if cam.is_exposure_auto_available():
                cam.set_exposure_time_auto(self._arv.Auto.OFF)
            cam.set_exposure_time(opts.exposure_us)
        if opts.gain_db is not None:
            self._bounded("gain (dB)", opts.gain_db, cam.get_gain_bounds())
            if cam.is_gain_auto_available():
                cam.set_gain_auto(self._arv.Auto.OFF)
            cam.set_gain(opts.gain_db)
        if opts.trigger is TriggerMode.FREE_RUN:
            cam.clear_triggers()
            if opts.fps:
                cam.set_frame_rate(opts.fps)
        elif opts.trigger is TriggerMode.SOFTWARE:
            cam.set_trigger("Software")
        else:
            sources = list(cam.dup_available_trigger_sources() or [])
            if opts.trigger_source not in sources:
                raise SourceFatal(f"LINEWATCH_CAMERA__TRIGGER_SOURCE={opts.trigger_source!r}: this camera's trigger "
                                  f"sources are {', '.join(sources)}")
            cam.set_trigger(opts.trigger_source)
        if cam.is_gv_device():
            if opts.packet_size:
                cam.gv_set_packet_size(opts.packet_size)
            else:
                cam.gv_auto_packet_size()

    @staticmethod
    def _bounded(what: str, value: float, bounds: tuple[float, float]) -> None:
        low, high = bounds
        if not low <= value <= high:
            raise SourceFatal(f"{what} {value:g} is outside this camera's range {low:g}..{high:g}")

    def _start_stream(self) -> None:
        arv, cam = self._arv, self._camera
        self._stream = cam.create_stream(None, None)
        if self._stream is None:
            raise SourceUnavailable("the camera gave no stream")
        payload = cam.get_payload()
        if cam.is_gv_device():
            # Without CAP_NET_RAW (a container, a non-root service) Aravis reads the stream from a plain UDP socket,
            # whose default buffer (212 KB) is smaller than one frame: most frames would arrive incomplete. Ask for
            # four frames' worth; the kernel caps it at net.core.rmem_max (docs/cameras.md: GenICam cameras).
            self._stream.set_property("socket-buffer", arv.GvStreamSocketBuffer.FIXED)
            self._stream.set_property("socket-buffer-size", max(SOCKET_BUFFER_MIN, 4 * payload))
        for _ in range(self.options.buffers):
            self._stream.push_buffer(arv.Buffer.new_allocate(payload))
        cam.set_acquisition_mode(arv.AcquisitionMode.CONTINUOUS)
        cam.start_acquisition()
        self._last_link_check = time.monotonic()

    def read(self) -> Image | Idle | None:
        if self._camera is None or self._stream is None:
            raise SourceUnavailable("camera not open")
        try:
            return self._read()
        except self._glib_error as exc:
            self._gone = True
            raise SourceUnavailable(f"camera {self.info.serial if self.info else ''}: {exc}") from None

    def _read(self) -> Image | Idle:
        mode, timeout = self.options.trigger, self.options.read_timeout_s
        started = time.monotonic()
        while True:
            if mode is TriggerMode.SOFTWARE and self._outstanding is None:
                shot = self._next_shot()
                if shot is None:
                    if not self._wake.wait(IDLE_WAIT_S):
                        self._check_link()
                        return IDLE
                    continue
                self._drain()
                self._camera.software_trigger()
                self._outstanding = (shot, time.monotonic())
                continue
            wait = IDLE_WAIT_S if mode is TriggerMode.HARDWARE else max(0.001, min(IDLE_WAIT_S, timeout))
            buffer = self._stream.timeout_pop_buffer(int(wait * 1e6))
            if buffer is None:
                now = time.monotonic()
                if self._outstanding is not None and now - self._outstanding[1] > timeout:
                    self._gone = True
                    raise SourceUnavailable(f"no frame within {timeout:g} s of the software trigger "
                                            f"({self._stream_counts()})")
                if mode is TriggerMode.FREE_RUN:
                    if now - started > timeout:  # frames are due: their absence is the sign (no register read)
                        self._gone = True
                        raise SourceUnavailable(f"no frame for {timeout:g} s")
                    self._check_control()
                    continue
                self._check_link()
                if mode is TriggerMode.HARDWARE:
                    return IDLE
                continue  # software: the fired frame is still on its way
            image = self._take(buffer)
            shot = self._outstanding[0] if self._outstanding is not None else None
            self._outstanding = None
            if image is None:  # incomplete: this frame is lost (a gap in the numbers), the shot used up
                self._lost += 1
                continue
            self._fired = shot
            self._last_link_check = time.monotonic()  # a frame proves the link
            return image

    def _take(self, buffer: Any) -> Image | None:
        try:
            if buffer.get_status() != self._arv.BufferStatus.SUCCESS:
                log.debug("genicam_frame_incomplete", status=str(buffer.get_status()))
                return None
            code = buffer.get_image_pixel_format()
            if code not in PIXEL_FORMATS:
                raise SourceFatal(f"the camera sends pixel format 0x{code:08x}, which linewatch does not read")
            stamp_ns = buffer.get_system_timestamp()
            self.captured_mono = time.monotonic() - max(0.0, time.time() - stamp_ns / 1e9) if stamp_ns else None
            return to_bgr(buffer.get_data(), buffer.get_image_width(), buffer.get_image_height(), code)
        except ValueError as exc:
            log.warning("genicam_frame_unreadable", error=str(exc))
            return None
        finally:
            self._stream.push_buffer(buffer)

    def _next_shot(self) -> Fired | None:
        with self._shots_lock:
            self._wake.clear()
            return self._shots.popleft() if self._shots else None

    def _drain(self) -> None:
        """Frames nobody fired for (left from before a reconnect): back to the stream, uncounted."""
        while (buffer := self._stream.try_pop_buffer()) is not None:
            self._stream.push_buffer(buffer)

    def _stream_counts(self) -> str:
        """Aravis' own counts for this stream (what arrived at all), for the message of a frame that never came."""
        try:
            queued = self._stream.get_n_buffers()  # (waiting for a frame, filled and not yet read)
            return "stream: " + ", ".join(
                f"{name} {self._stream.get_info_uint64_by_name('n_' + name)}" for name in _STREAM_COUNTS) + (
                f", buffers queued {queued[0]} in / {queued[1]} out of {self.options.buffers}")
        except (self._glib_error, AttributeError, TypeError):  # an older Aravis without stream infos
            return "no stream counts"

    def _check_control(self) -> None:
        """Whether this host is still the GigE Vision camera's controller (Aravis' heartbeat thread reads it once a
        second; asking costs nothing). A camera that dropped us sends no more frames, however long we wait."""
        device = self._device
        if device is not None and not device.is_controller():
            self._gone = True  # its new controller may ignore our goodbye: release it without waiting
            raise SourceUnavailable(f"camera {self.info.serial if self.info else ''}: control lost (its heartbeat "
                                    "timed out: this host stalled for 3 s or more, or another application took it)")

    def _check_link(self) -> None:
        self._check_control()
        now = time.monotonic()
        if now - self._last_link_check < LINK_CHECK_S:
            return
        self._last_link_check = now
        if self.info is not None and self.info.protocol == "GigEVision" and self.info.address:
            if not gige_answers(self.info.address):
                self._gone = True
                raise SourceUnavailable(f"camera {self.info.serial} at {self.info.address} does not answer")
            return
        self._camera.get_integer("Width")  # USB3 Vision: raises GLib.Error when the camera no longer answers

    def close(self) -> None:
        camera, self._camera, stream, self._stream = self._camera, None, self._stream, None
        self._device = None  # holds the camera too: the last reference must go with it
        with self._shots_lock:
            self._shots.clear()  # their jobs hear the camera reconnecting: unknown
        self._outstanding, self._fired = None, None
        if camera is None:
            return
        if not self._gone:
            try:
                camera.stop_acquisition()
            except self._glib_error as exc:
                log.debug("genicam_stop_failed", error=str(exc))
            del stream, camera  # dropping the last reference releases the camera's control channel
            return
        # A camera that is gone: releasing it waits out a GigE Vision timeout per command (stream teardown, control
        # channel), about 7.5 s. A thread of its own drops the last references, so reconnecting starts at once.
        dying = [stream, camera]
        del stream, camera
        threading.Thread(target=dying.clear, name="genicam-release", daemon=True).start()
