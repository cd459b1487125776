"""Camera settings: one camera (LINEWATCH_CAMERA__*) or several (LINEWATCH_CAMERAS__<ID>__*), and the
`CameraConfig` the composition root builds each camera's pipeline from."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator

from daemon.settings.base import Section, read_small_file
from daemon.settings.events import RulesSettings
from daemon.settings.jobs import JobsSettings
from daemon.sources.factory import SourceOptions
from daemon.sources.url import CameraUrl, SourceKind, parse_camera_url
from daemon.topics import DAEMON_LEVEL

TOPIC_WORD = re.compile(r"^[A-Za-z0-9_.-]+$")


class TileSettings(Section):
    """Tiled inference for small defects on large frames (LINEWATCH_CAMERA__TILES__* or, per camera,
    LINEWATCH_CAMERAS__<ID>__TILES__*, or the whole object as JSON in LINEWATCH_CAMERAS__<ID>__TILES)."""

    size: int | None = Field(None, ge=32, le=4096, description="Tile side in the frame's own pixels; default: the "
                             "model's input size (each tile seen at native resolution)")
    overlap: float = Field(0.2, ge=0.0, le=0.75, description="Overlap of neighbouring tiles, a fraction of the "
                           "tile side: at least the largest defect's size, so each defect lies whole in one tile")
    full_frame: bool = Field(False, description="Also inspect the whole frame, letterboxed, for defects larger "
                             "than a tile; its boxes are merged with the tiles'")
    per_batch: int = Field(8, ge=1, le=256, description="At most this many of the camera's tiles in one batch of "
                           "the shared detector, so a large camera cannot starve the others")
    merge_ios: float = Field(0.5, gt=0.0, le=1.0, description="Boxes of one class from different tiles are merged "
                             "(SAHI's greedy NMM) when their intersection covers this fraction of the smaller one")


class CameraSettings(Section):
    url: str = Field(
        description="rtsp://…, /dev/videoN or v4l2:///dev/videoN, file:///path.mp4 or a path, "
        "synthetic://line?…, gst://<pipeline ending in appsink>, genicam://[serial]"
    )
    id: str | None = Field(None, max_length=128,
                           description="Stable camera id used in topics; derived from the URL if unset")
    username: str | None = Field(
        None, max_length=256, description="RTSP: the camera's user name, instead of one in the URL")
    password_file: Path | None = Field(
        None, description="RTSP: file holding the camera's password (Docker/systemd secret), read at each connect; "
        "keeps it out of the URL and the environment")
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport; TCP survives loss")
    open_timeout_s: float = Field(10.0, gt=0, le=300, description="Deadline to open the stream")
    read_timeout_s: float = Field(5.0, gt=0, le=300, description="Deadline for one frame read")
    loop: bool = Field(False, description="Video files: start again at the end instead of stopping")
    pace: Literal["realtime", "max"] = Field("realtime", description="Video files: at their fps, or max")
    fourcc: str | None = Field(None, description="V4L2 pixel format, e.g. MJPG or YUYV")
    width: int | None = Field(None, gt=0, le=16384, description="V4L2 requested width; GenICam region width")
    height: int | None = Field(None, gt=0, le=16384, description="V4L2 requested height; GenICam region height")
    fps: float | None = Field(None, gt=0, le=1000, description="V4L2 requested frame rate; GenICam free-run rate")
    exposure: float | None = Field(None, ge=-1e6, le=1e6, description="V4L2 manual exposure, in the driver's units; "
                                   "GenICam exposure time in µs (auto exposure off)")
    trigger: Literal["free_run", "software", "hardware"] = Field(
        "free_run", description="GenICam: free_run (the camera's frame rate); software (linewatch fires one exposure "
        "per frame of each inspection job); hardware (the camera's line input; frames matched to jobs)")
    trigger_source: str = Field("Line0", max_length=64, pattern=r"^[A-Za-z0-9_]+$",
                                description="GenICam hardware trigger: the camera's input line")
    trigger_match_ms: float = Field(
        100.0, gt=0, le=10_000, description="GenICam hardware trigger: a frame belongs to the job whose trigger is "
        "within this time of its exposure; a job with no such frame is unknown (frame_missing)")
    pixel_format: str | None = Field(None, description="GenICam pixel format (Mono8, BayerRG8, RGB8, …); default: the "
                                     "camera's own if linewatch reads it, else the best colour one it offers")
    gain: float | None = Field(None, ge=0, le=100, description="GenICam gain in dB (auto gain off)")
    packet_size: int | None = Field(None, ge=576, le=16384, description="GigE Vision stream packet size in bytes "
                                    "(jumbo frames: 8192 or 9000); default: negotiated with the camera")
    wait_for_device: bool = Field(False, description="V4L2: retry a missing device instead of exiting 4")
    stall_timeout_s: float | None = Field(
        None, gt=0, le=600, description="Reopen after this long without a frame; default max(5 s, 10 frame intervals)"
    )
    backoff_initial_s: float = Field(0.5, gt=0, le=60, description="First reconnect delay")
    backoff_max_s: float = Field(10.0, gt=0, le=600, description="Reconnect delay cap")
    motion_px: float = Field(
        0.0, ge=0, le=16384, description="How far a part moves between two of the camera's frames, in pixels of the "
        "frame (the conveyor's speed as this camera sees it); the tracker's association reaches that far, so a defect "
        "smaller than the line's motion keeps one track. 0: only as far as the box's own size")
    tiles: TileSettings | None = Field(None, description="Tiled inference (off when unset): tile size, overlap, "
                                       "full-frame pass, tiles per batch, merge threshold")
    handoff: Literal["auto", "latest", "wait"] = Field(
        "auto", description="Drop policy of the capture→detector hand-off; auto: live→latest, files and triggered "
        "GenICam cameras→wait"
    )

    @field_validator("url")
    @classmethod
    def _url_parses(cls, value: str) -> str:
        parse_camera_url(value)  # raises ValueError with the accepted forms
        return value

    @field_validator("username", "password_file")
    @classmethod
    def _credentials_for_rtsp(cls, value: str | Path | None, info: ValidationInfo) -> str | Path | None:
        url = info.data.get("url")
        if value is None or url is None:
            return value
        if parse_camera_url(url).kind is not SourceKind.RTSP:
            raise ValueError("only an rtsp:// camera takes a user name or a password file")
        if info.field_name == "password_file":
            read_small_file(Path(value))
            if urlsplit(url).password is not None:
                raise ValueError("the camera URL holds a password already: take it out of the URL")
        return value

    @field_validator("trigger", "pixel_format", "gain", "packet_size")
    @classmethod
    def _genicam_only(cls, value: object, info: ValidationInfo) -> object:
        url = info.data.get("url")
        if url is None or value in (None, "free_run") or parse_camera_url(url).kind is SourceKind.GENICAM:
            return value
        raise ValueError("only a genicam:// camera takes this setting")

    @field_validator("pixel_format")
    @classmethod
    def _pixel_format_known(cls, value: str | None) -> str | None:
        from daemon.sources.genicam_pixels import BY_NAME

        if value is not None and value not in BY_NAME:
            raise ValueError(f"{value!r} is not a pixel format linewatch reads; accepted: {', '.join(BY_NAME)}")
        return value

    @field_validator("id")
    @classmethod
    def _id_is_topic_safe(cls, value: str | None) -> str | None:
        if value is not None:
            check_camera_id(value)
        return value

    @field_validator("fourcc")
    @classmethod
    def _fourcc_is_four_chars(cls, value: str | None) -> str | None:
        if value is not None and len(value) != 4:
            raise ValueError(f"{value!r} is not a FOURCC; use four characters such as MJPG or YUYV")
        return value

    @property
    def source(self) -> CameraUrl:
        return parse_camera_url(self.url)

    @property
    def camera_id(self) -> str:
        return self.id or self.source.default_id

    @property
    def is_live(self) -> bool:
        return self.source.is_live(pace=self.pace)

    def source_options(self) -> SourceOptions:
        return SourceOptions(
            rtsp_transport=self.rtsp_transport, open_timeout_s=self.open_timeout_s,
            read_timeout_s=self.read_timeout_s, loop=self.loop, realtime=self.pace == "realtime",
            fourcc=self.fourcc, width=self.width, height=self.height, fps=self.fps, exposure=self.exposure,
            wait_for_device=self.wait_for_device, username=self.username, password_file=self.password_file,
            trigger=self.trigger, trigger_source=self.trigger_source, pixel_format=self.pixel_format, gain=self.gain,
            packet_size=self.packet_size)

    @property
    def triggered(self) -> bool:
        """A camera that exposes only when triggered: every frame it sends belongs to a part."""
        return self.trigger != "free_run"


def check_camera_id(value: str) -> None:
    if not TOPIC_WORD.fullmatch(value):
        raise ValueError(f"{value!r} is not usable in an MQTT topic; use letters, digits, '_', '-', '.'")
    if value.lower() == DAEMON_LEVEL:
        raise ValueError(f"{value!r} is reserved for the daemon's own topics")


class CameraEntry(CameraSettings):
    """One camera of several: LINEWATCH_CAMERAS__<ID>__<FIELD>. Its id is <ID> (lower-cased) unless ID is set."""

    rules: RulesSettings | None = Field(
        None, description="This camera's own rules (LINEWATCH_CAMERAS__<ID>__RULES__*), instead of LINEWATCH_RULES__*")
    jobs: JobsSettings | None = Field(
        None, description="This camera's own inspection jobs (LINEWATCH_CAMERAS__<ID>__JOBS__*), instead of "
        "LINEWATCH_JOBS__*")


@dataclass(frozen=True)
class CameraConfig:
    """One camera as the composition root sees it: its id, its camera settings and the rules that apply."""

    camera_id: str
    camera: CameraSettings
    rules: RulesSettings
    env: str  # the variable prefix that configures it, for messages: LINEWATCH_CAMERA or LINEWATCH_CAMERAS__CAM1
    jobs: JobsSettings
