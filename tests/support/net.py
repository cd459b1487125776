"""Loopback port helpers shared by the service wrappers."""

from __future__ import annotations

import errno
import random
import socket
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


_LOWEST = 10_000  # below: ports services are configured to use


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that was free a moment ago, below the kernel's ephemeral range.

    A port in that range can be taken at any moment as the local end of some outgoing connection: while a
    broker is down for a test, its clients reconnecting to its port (or any other client on the box) may be
    given that very port, and the broker restarted on it then fails with "address in use" (seen in CI). Below
    the range nothing is handed out by the kernel. There is still a race between this probe and the service
    binding the port; callers that own the service retry on "address in use".
    """
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(_LOWEST, low) if low > _LOWEST else 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))  # without SO_REUSEADDR: a port some socket still holds is refused
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise
            found: int = sock.getsockname()[1]
            return found
    raise OSError(errno.EADDRINUSE, f"no free port found on {host} between {_LOWEST} and {low}")


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out to outgoing connections (Linux; elsewhere a conservative guess)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def wait_port(host: str, port: int, deadline_s: float) -> None:
    """Block until ``host:port`` accepts a TCP connection, or raise TimeoutError.

    ``deadline_s`` is a duration in seconds from now. A listening socket offers no
    event we could wait on from outside the process, so this retries a connect;
    each refused connect returns at once, hence the short pause between tries.
    """
    end = time.monotonic() + deadline_s
    last_error: OSError | None = None
    while True:
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{host}:{port} not accepting connections after {deadline_s:.1f}s: {last_error}")
        try:
            with socket.create_connection((host, port), timeout=min(remaining, 1.0)):
                return
        except OSError as exc:
            last_error = exc
        time.sleep(min(0.02, max(0.0, end - time.monotonic())))


def port_is_bindable(host: str, port: int) -> bool:
    """True when a server using SO_REUSEADDR (mosquitto, GLib) could bind ``port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Match the servers' own option so TIME_WAIT leftovers do not count as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
        return True


def wait_port_bindable(host: str, port: int, deadline_s: float) -> None:
    """Block until ``port`` can be bound again (the old listener is really gone)."""
    end = time.monotonic() + deadline_s
    while not port_is_bindable(host, port):
        if time.monotonic() >= end:
            raise TimeoutError(f"{host}:{port} still in use after {deadline_s:.1f}s")
        time.sleep(0.02)
