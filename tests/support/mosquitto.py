"""A real mosquitto broker per test, on loopback, configured from Python.

The broker is the system's ``/usr/sbin/mosquitto``; its config, password file,
ACL, persistence database and log live in one work directory so a test can read
them and a ``restart()`` finds the same persisted sessions on the same port.
"""

from __future__ import annotations

import getpass
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support import _children
from tests.support.net import LOOPBACK, free_port

if TYPE_CHECKING:
    from tests.support.tls import Pki

MOSQUITTO_BIN = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD_BIN = "/usr/bin/mosquitto_passwd"

# How many fresh ports to try when the one picked was taken between free_port()
# and mosquitto's bind (other tests run in parallel on the same machine).
_BIND_ATTEMPTS = 3


def mosquitto_missing() -> str | None:
    """Reason to skip broker tests, or None when the binaries are installed."""
    for binary in (MOSQUITTO_BIN, MOSQUITTO_PASSWD_BIN):
        if not Path(binary).exists():
            return f"{binary} not installed (apt-get install mosquitto mosquitto-clients)"
    return None


class BrokerError(RuntimeError):
    """mosquitto did not start (or did not stop) as asked; the message carries its log."""


@dataclass(frozen=True)
class TlsListener:
    """Files and options for a TLS listener (``cafile`` verifies client certs)."""

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = True
    tls_version: str = "tlsv1.2"
    # Map the client certificate's CN to the username, so ACLs can name clients.
    use_identity_as_username: bool = False

    @classmethod
    def from_pki(cls, pki: Pki, *, wrong_host: bool = False, require_certificate: bool = True) -> TlsListener:
        """Listener serving the PKI's server cert (or the wrong-hostname one)."""
        return cls(
            cafile=pki.ca_cert,
            certfile=pki.wrong_host_cert if wrong_host else pki.server_cert,
            keyfile=pki.wrong_host_key if wrong_host else pki.server_key,
            require_certificate=require_certificate,
        )


class Mosquitto(_children.ChildProcess):
    """One mosquitto process on 127.0.0.1, restartable on the same port(s).

    Ports are chosen at construction so a test can build the daemon's settings
    (``url``) before ``start()``. Use as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        allow_anonymous: bool = True,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        persistence: bool = False,
        autosave_interval: int = 1,
        autosave_on_changes: bool = True,
        tls: TlsListener | None = None,
        plain_listener: bool = True,
        extra_config: str = "",
        start_timeout: float = 10.0,
    ) -> None:
        if not plain_listener and tls is None:
            raise ValueError("a broker needs at least one listener")
        self._owns_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="mosquitto-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.allow_anonymous = allow_anonymous
        self.users = dict(users or {})
        self.acl = acl
        self.persistence = persistence
        self.autosave_interval = autosave_interval
        self.autosave_on_changes = autosave_on_changes
        self.tls = tls
        self.plain_listener = plain_listener
        self.extra_config = extra_config
        self.start_timeout = start_timeout

        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.stderr_path = self.workdir / "mosquitto.stderr"
        self.persistence_dir = self.workdir / "persistence"
        self.passwd_path = self.workdir / "passwd"
        self.acl_path = self.workdir / "acl"

        self._port: int | None = free_port() if plain_listener else None
        self._tls_port: int | None = free_port() if tls is not None else None
        # Once a start succeeded the ports are the broker's identity: a restart
        # must reuse them, never silently move.
        self._ports_fixed = False
        super().__init__()

    what = "mosquitto"

    # -- addresses ---------------------------------------------------------

    host = LOOPBACK

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("this broker has no plain listener")
        return self._port

    @property
    def tls_port(self) -> int:
        if self._tls_port is None:
            raise RuntimeError("this broker has no TLS listener")
        return self._tls_port

    @property
    def url(self) -> str:
        return f"mqtt://{LOOPBACK}:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"mqtts://{LOOPBACK}:{self.tls_port}"

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Mosquitto:
        """Start the broker and return once every listener accepts connections.

        Raises BrokerError with mosquitto's log if it exits or is not reachable
        within ``start_timeout``.
        """
        if self.running:
            raise RuntimeError("mosquitto already running")
        self._write_support_files()
        for attempt in range(_BIND_ATTEMPTS):
            self._write_config()
            self._spawn()
            try:
                self._wait_ready()
            except BrokerError as exc:
                if not self._ports_fixed and attempt + 1 < _BIND_ATTEMPTS and "Address already in use" in str(exc):
                    self._repick_ports()
                    continue
                raise
            self._ports_fixed = True
            return self
        raise AssertionError("unreachable")

    def restart(self, *, graceful: bool = True) -> Mosquitto:
        """Stop (or kill) and start again on the same port(s) and persistence."""
        if graceful:
            self.stop()
        else:
            self.kill()
        # mosquitto binds with SO_REUSEADDR, so TIME_WAIT from old clients is no obstacle.
        return self.start()

    def close(self) -> None:
        """Stop the broker and remove the work directory if this object made it."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- logs --------------------------------------------------------------

    def log_text(self) -> str:
        """mosquitto's log (all log types, so protocol packets too) plus its stderr."""
        parts = []
        for path in (self.log_path, self.stderr_path):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    def log_mark(self) -> int:
        """Current end of the log file; pass as ``since`` to match only later lines."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def wait_for_log(self, pattern: str, timeout: float = 5.0, since: int = 0) -> re.Match[str]:
        """Wait until a log line after byte offset ``since`` matches the regex ``pattern``.

        The log is a file written by another process, which offers nothing to
        block on, so this re-reads it on a short interval until the deadline.
        """
        regex = re.compile(pattern, re.MULTILINE)
        end = time.monotonic() + timeout
        while True:
            try:
                with self.log_path.open("rb") as log:
                    log.seek(since)
                    text = log.read().decode(errors="replace")
            except FileNotFoundError:
                text = ""
            match = regex.search(text)
            if match is not None:
                return match
            if time.monotonic() >= end:
                raise AssertionError(f"no log line matched {pattern!r} in {timeout}s; log tail:\n{self._log_tail()}")
            time.sleep(0.05)

    @property
    def db_path(self) -> Path:
        return self.persistence_dir / "mosquitto.db"

    def wait_persisted(self, needle: bytes, timeout: float = 5.0) -> None:
        """Wait until mosquitto's database file on disk contains ``needle`` (e.g. a payload).

        A PUBACK does not mean "on disk", and neither does the "Saving in-memory
        database" log line, which is written before the file. mosquitto writes
        ``mosquitto.db.new`` and renames it over the old file, so reading the
        file sees a complete old or new database; polling it until the deadline
        is the only signal available from outside the broker.
        """
        if not self.persistence:
            raise RuntimeError("persistence is off for this broker")
        end = time.monotonic() + timeout
        while True:
            try:
                if needle in self.db_path.read_bytes():
                    return
            except FileNotFoundError:
                pass
            if time.monotonic() >= end:
                raise AssertionError(f"{needle!r} not in {self.db_path} after {timeout}s")
            time.sleep(0.02)

    # -- internals ---------------------------------------------------------

    def _repick_ports(self) -> None:
        if self._port is not None:
            self._port = free_port()
        if self._tls_port is not None:
            self._tls_port = free_port()

    def _spawn(self) -> None:
        with self.stderr_path.open("ab") as err:
            self._adopt(_children.spawn(
                [MOSQUITTO_BIN, "-c", str(self.config_path)], stdout=err, stderr=subprocess.STDOUT
            ))

    def _listener_ports(self) -> list[int]:
        return [p for p in (self._port, self._tls_port) if p is not None]

    def _wait_ready(self) -> None:
        # A TCP accept is enough: mosquitto restores persistence before it opens
        # listeners and serves connections from a single loop.
        assert self._proc is not None
        end = time.monotonic() + self.start_timeout
        pending = self._listener_ports()
        while pending:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._take_proc()
                raise BrokerError(f"mosquitto exited with {code} during start; log:\n{self._log_tail()}")
            if time.monotonic() >= end:
                self.kill()
                raise BrokerError(f"mosquitto not listening after {self.start_timeout}s; log:\n{self._log_tail()}")
            try:
                with socket.create_connection((LOOPBACK, pending[0]), timeout=1.0):
                    pending.pop(0)
            except OSError:
                time.sleep(0.02)

    def _log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _write_support_files(self) -> None:
        if self.users:
            self.passwd_path.unlink(missing_ok=True)
            create = True
            for user, password in self.users.items():
                cmd = (
                    [MOSQUITTO_PASSWD_BIN, "-b"] + (["-c"] if create else []) + [str(self.passwd_path), user, password]
                )
                subprocess.run(cmd, check=True, capture_output=True, timeout=30)
                create = False
            self.passwd_path.chmod(0o600)
        if self.acl is not None:
            self.acl_path.write_text(self.acl)
            self.acl_path.chmod(0o600)
        if self.persistence:
            self.persistence_dir.mkdir(exist_ok=True)

    def _write_config(self) -> None:
        lines = [
            # As root mosquitto would drop to user "mosquitto", which cannot read
            # the test's files; naming the current user keeps it as it was started.
            f"user {getpass.getuser()}",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            f"log_dest file {self.log_path}",
            "log_type all",
            "connection_messages true",
            "log_timestamp true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if self.users:
            lines.append(f"password_file {self.passwd_path}")
        if self.acl is not None:
            lines.append(f"acl_file {self.acl_path}")
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.persistence_dir}/",
                f"persistence_file {self.db_path.name}",
                f"autosave_interval {self.autosave_interval}",
                f"autosave_on_changes {'true' if self.autosave_on_changes else 'false'}",
            ]
        else:
            lines.append("persistence false")
        if self.extra_config:
            lines.append(self.extra_config)
        # Listener blocks last: options after "listener" apply to that listener.
        if self._port is not None:
            lines.append(f"listener {self._port} {LOOPBACK}")
        if self.tls is not None:
            lines += [
                f"listener {self._tls_port} {LOOPBACK}",
                f"cafile {self.tls.cafile}",
                f"certfile {self.tls.certfile}",
                f"keyfile {self.tls.keyfile}",
                f"require_certificate {'true' if self.tls.require_certificate else 'false'}",
                f"tls_version {self.tls.tls_version}",
                f"use_identity_as_username {'true' if self.tls.use_identity_as_username else 'false'}",
            ]
        self.config_path.write_text("\n".join(lines) + "\n")
