"""An MQTT 5 broker that refuses the PUBLISHes a test chooses, with the reason code it chooses.

mosquitto never refuses a PUBLISH with a code like 0x97 (quota exceeded, what EMQX and HiveMQ send when they
rate-limit), so this proxy sits in front of a real mosquitto and plays that broker: for each QoS 1/2 PUBLISH
whose topic matches, `decide(topic, index, payload)` returns None (forward it: mosquitto stores, delivers and answers
it) or a reason code (keep it from mosquitto and answer the client a PUBACK with that code). Everything else
passes through untouched, packet by packet, so the client talks to a real broker in every other respect.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType

from tests.support.net import LOOPBACK

Decide = Callable[[str, int, bytes], int | None]  # (topic, index of the matching PUBLISH, payload) -> code


def _read_exact(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def read_packet(sock: socket.socket) -> bytes:
    """One whole MQTT control packet: fixed header, remaining length (a varint), body."""
    first = _read_exact(sock, 1)
    length_bytes, length, shift = b"", 0, 0
    while True:
        byte = _read_exact(sock, 1)
        length_bytes += byte
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    return first + length_bytes + _read_exact(sock, length)


def _body(packet: bytes) -> bytes:
    index = 1
    while packet[index] & 0x80:
        index += 1
    return packet[index + 1:]


class RefusingBroker:
    """Listens on loopback; each client connection gets its own connection to the real broker upstream."""

    def __init__(self, upstream_port: int, decide: Decide, topic_suffix: str = "/defects") -> None:
        self._upstream = upstream_port
        self.decide = decide  # may be replaced while running: later PUBLISHes follow the new rule
        self._suffix = topic_suffix
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"mqtt://{LOOPBACK}:{self.port}"
        self._lock = threading.Lock()
        self._seen = 0  # matching PUBLISHes so far (retries count again)
        self.refused: list[tuple[str, int, int]] = []  # (topic, packet id, code)
        self._sockets: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="refusing-broker", daemon=True)

    def start(self) -> RefusingBroker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        self._thread.join(5)

    def __enter__(self) -> RefusingBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((LOOPBACK, self._upstream))
            with self._lock:
                self._sockets += [client, upstream]
            write_lock = threading.Lock()  # the client's socket gets whole packets from two threads
            threading.Thread(target=self._client_to_broker, args=(client, upstream, write_lock), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, write_lock), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, write_lock: threading.Lock) -> None:
        try:
            while True:
                packet = read_packet(source)
                with write_lock:
                    sink.sendall(packet)
        except OSError:
            self._close(source, sink)

    def _client_to_broker(self, client: socket.socket, upstream: socket.socket, write_lock: threading.Lock) -> None:
        try:
            while True:
                packet = read_packet(client)
                code = self._refusal(packet)
                if code is None:
                    upstream.sendall(packet)
                    continue
                packet_id = self._packet_id(packet)
                with write_lock:  # PUBACK: packet id, reason code, no properties
                    client.sendall(bytes([0x40, 0x04]) + packet_id + bytes([code, 0x00]))
        except OSError:
            self._close(client, upstream)

    def _refusal(self, packet: bytes) -> int | None:
        if packet[0] >> 4 != 3 or not (packet[0] >> 1) & 0x03:  # not a PUBLISH with a packet id (QoS 1 or 2)
            return None
        body = _body(packet)
        topic = body[2:2 + int.from_bytes(body[:2], "big")].decode("utf-8", "replace")
        if not topic.endswith(self._suffix):
            return None
        with self._lock:
            index = self._seen
            self._seen += 1
        code = self.decide(topic, index, self._payload(packet))
        if code is not None:
            with self._lock:
                self.refused.append((topic, int.from_bytes(self._packet_id(packet), "big"), code))
        return code

    @staticmethod
    def _payload(packet: bytes) -> bytes:
        """A QoS 1/2 MQTT 5 PUBLISH's payload: after the topic, the packet id and the properties."""
        body = _body(packet)
        index = 2 + int.from_bytes(body[:2], "big") + 2
        length, shift = 0, 0
        while True:  # the properties' length, a varint
            byte = body[index]
            index += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return body[index + length:]

    @staticmethod
    def _packet_id(packet: bytes) -> bytes:
        body = _body(packet)
        length = int.from_bytes(body[:2], "big")
        return body[2 + length:4 + length]

    @staticmethod
    def _close(*sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
