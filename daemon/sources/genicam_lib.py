"""Aravis, the GenICam library (GigE Vision and USB3 Vision), loaded on first use, and camera discovery.

Aravis is reached through GObject introspection (PyGObject, `linewatch[genicam]`). The library itself comes from the
system (Debian/Ubuntu/JetPack: `gir1.2-aravis-0.8`) or, on x86_64, from the `aravis-python` wheel; the system's is
tried first. Nothing here is imported unless a genicam:// camera is configured or `linewatch doctor` looks.
"""

from __future__ import annotations

import importlib
import os
import re
import socket
import threading
from dataclasses import dataclass
from types import ModuleType

from daemon.sources.base import SourceFatal

INSTALL_HINT = ("GenICam cameras need Aravis 0.8 and PyGObject: apt install gir1.2-aravis-0.8 gir1.2-glib-2.0 "
                "libgirepository1.0-dev libcairo2-dev, then pip install 'linewatch[genicam]' (see docs/cameras.md, "
                "GenICam cameras)")

_lock = threading.Lock()
_module: ModuleType | None = None


def load_aravis() -> ModuleType:
    """The Aravis module (gi.repository.Aravis). Raises SourceFatal with the install steps when it is missing."""
    global _module
    with _lock:
        if _module is not None:
            return _module
        try:
            gi = importlib.import_module("gi")
        except ImportError:
            raise SourceFatal(f"PyGObject is not installed. {INSTALL_HINT}") from None
        try:
            gi.require_version("Aravis", "0.8")
        except ValueError:  # no system typelib: the aravis-python wheel carries library and typelib
            try:
                importlib.import_module("aravis")
            except (ImportError, OSError, ValueError):
                raise SourceFatal(f"Aravis 0.8 is not installed. {INSTALL_HINT}") from None
        try:
            _module = importlib.import_module("gi.repository.Aravis")
        except ImportError as exc:  # a typelib it needs is missing (GLib's, Gio's: gir1.2-glib-2.0)
            raise SourceFatal(f"Aravis cannot be loaded ({exc}). {INSTALL_HINT}") from None
        return _module


def library_version() -> str:
    """The loaded libaravis' own version (Aravis 0.8 has no call for it): from the shared object's file name."""
    load_aravis().get_n_devices()  # the library is loaded on first use
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
            paths = {line.split()[-1] for line in maps if "libaravis" in line}
    except OSError:
        paths = set()
    for path in sorted(paths):
        match = re.search(r"libaravis-[\d.]+\.so\.[\d.]*?(\d+\.\d+\.\d+)$", os.path.realpath(path))
        if match:
            return match.group(1)
    return "0.8"


@dataclass(frozen=True)
class GenicamCamera:
    """A camera as discovery sees it (before anyone opens it)."""

    device_id: str
    vendor: str
    model: str
    serial: str
    address: str  # IP for GigE Vision, the USB bus path for USB3 Vision
    protocol: str  # GigEVision | USB3Vision

    def matches(self, selector: str) -> bool:
        """genicam://<selector>: the serial number, the device id or the address; '' is any camera."""
        return not selector or selector in (self.serial, self.device_id, self.address)


_discovery_lock = threading.Lock()  # Aravis' device list is one process-wide list


def discover() -> list[GenicamCamera]:
    """Every GenICam camera Aravis can see now (GigE Vision discovery broadcast, USB3 Vision enumeration)."""
    arv = load_aravis()
    with _discovery_lock:
        arv.update_device_list()
        return [GenicamCamera(arv.get_device_id(i) or "", arv.get_device_vendor(i) or "", arv.get_device_model(i) or "",
                              arv.get_device_serial_nbr(i) or "", arv.get_device_address(i) or "",
                              arv.get_device_protocol(i) or "")
                for i in range(arv.get_n_devices())]


def describe(cameras: list[GenicamCamera]) -> list[dict[str, str]]:
    """For doctor: one dict per camera."""
    return [{"vendor": c.vendor, "model": c.model, "serial": c.serial, "address": c.address,
             "protocol": c.protocol, "url": f"genicam://{c.serial or c.device_id}"} for c in cameras]


GVCP_PORT = 3956
_DISCOVERY = bytes([0x42, 0x01, 0x00, 0x02, 0x00, 0x00, 0xFF, 0xFF])  # GVCP DISCOVERY_CMD, acknowledge, request 0xffff


def gige_answers(address: str, timeout_s: float = 0.4, tries: int = 5) -> bool:
    """Whether the GigE Vision camera at `address` answers a unicast discovery: every camera does, whoever controls
    it, and on a socket of its own this never waits behind Aravis' control channel (whose commands to a camera that
    is gone take 2.5 s each). Five tries of 400 ms: a busy camera or host is not taken for a dead one (a loaded CI
    machine once missed three of 200 ms), and a dead one is still known within 2 s."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        for _ in range(tries):
            try:
                sock.sendto(_DISCOVERY, (address, GVCP_PORT))
                reply, _ = sock.recvfrom(1024)
            except OSError:
                continue
            if len(reply) >= 8 and reply[2:4] == b"\x00\x03":  # DISCOVERY_ACK
                return True
    return False
