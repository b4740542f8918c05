"""A raw WebSocket client: the handshake and the frames written by hand, for what a client
library never does (stall its reads, send broken frames, flood pings, never answer).

The handshake's response is read byte by byte, so not one byte of the first frames is consumed
with it. Client frames are masked (RFC 6455 requires it); server frames are parsed from the
bytes as they came, whole frames only.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.support.servers import scaled

CONTINUATION = 0x0
TEXT = 0x1
CLOSE = 0x8
PING = 0x9
ZERO_KEY = b"\x00\x00\x00\x00"
"""A mask key that leaves the payload readable on the wire (still a masked frame)."""
NO_STATUS = 1005
"""The close code a close frame without a payload stands for."""


def upgrade_request(port: int, path: str, extra_headers: str = "") -> bytes:
    """The client's opening handshake (``extra_headers``: whole ``Name: value\\r\\n`` lines)."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    ).encode()


def check_upgraded(head: bytes) -> None:
    assert head.startswith(b"HTTP/1.1 101"), head


def raw_handshake(
    port: int, path: str, extra_headers: str = "", receive_buffer: int | None = None
) -> socket.socket:
    """A bare TCP socket that completes a WebSocket handshake and then does only what it's told
    (``receive_buffer``: the kernel's receive buffer, set before connecting)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(scaled(5))
    sock.connect(("127.0.0.1", port))
    sock.sendall(upgrade_request(port, path, extra_headers))
    head = b""
    while not head.endswith(b"\r\n\r\n"):  # byte by byte: not one frame byte is consumed
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError("closed during the handshake")
        head += byte
    check_upgraded(head)
    return sock


async def open_raw(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """:func:`raw_handshake` on asyncio streams (the reader keeps whatever followed the head)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(upgrade_request(port, path))
        async with asyncio.timeout(scaled(5)):
            check_upgraded(await reader.readuntil(b"\r\n\r\n"))
    except BaseException:
        writer.close()
        raise
    return reader, writer


def masked_frame(opcode: int, payload: bytes, key: bytes = ZERO_KEY) -> bytes:
    """A client frame with FIN set, masked with ``key`` (the zero key keeps it readable)."""
    header = bytes([0x80 | opcode])
    length = len(payload)
    if length < 126:
        header += bytes([0x80 | length])
    elif length < 65536:
        header += bytes([0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header += bytes([0x80 | 127]) + length.to_bytes(8, "big")
    masked = payload if key == ZERO_KEY else bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + masked


def server_frames(data: bytes | bytearray) -> Iterator[tuple[int, bytes, int]]:
    """The whole (unmasked) server frames at the start of ``data``: opcode, payload, and the
    offset just past the frame. Stops at the first incomplete frame."""
    offset = 0
    while len(data) - offset >= 2:
        opcode, length = data[offset] & 0x0F, data[offset + 1] & 0x7F
        header = 2
        if length == 126:
            if len(data) - offset < 4:
                return
            length, header = int.from_bytes(data[offset + 2 : offset + 4], "big"), 4
        elif length == 127:
            if len(data) - offset < 10:
                return
            length, header = int.from_bytes(data[offset + 2 : offset + 10], "big"), 10
        if len(data) - offset < header + length:
            return
        payload = bytes(data[offset + header : offset + header + length])
        offset += header + length
        yield opcode, payload, offset


def close_code_of(payload: bytes) -> int:
    """The status code of a close frame's payload."""
    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else NO_STATUS


def first_close_code(data: bytes) -> int | None:
    """The code of the first close frame among the server frames in ``data``."""
    for opcode, payload, _ in server_frames(data):
        if opcode == CLOSE:
            return close_code_of(payload)
    return None


@dataclass
class Received:
    """Everything one connection got: its events in order, and the close frame if one came."""

    events: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    texts: list[str] = field(default_factory=list)

    def messages(self, room: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == "message" and room in (None, e["room"])]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]

    def add_text(self, text: str) -> None:
        """One text frame: kept as it came, and its JSON events (newline-separated) parsed."""
        self.texts.append(text)
        if text.startswith("{"):
            self.events.extend(json.loads(line) for line in text.split("\n") if line)


def parse_frames(data: bytes | bytearray) -> tuple[Received, int]:
    """Parse unmasked server frames; returns what they say and how many bytes were whole frames
    (up to and including a close frame, after which nothing is read)."""
    received = Received()
    consumed = 0
    for opcode, payload, end in server_frames(data):
        consumed = end
        if opcode == TEXT:
            received.add_text(payload.decode())
        elif opcode == CLOSE:
            received.close_code = close_code_of(payload)
            break
    return received, consumed


class StalledClient:
    """A WebSocket client on a bare socket with a small receive buffer that reads only on demand.

    A stalled reader is the only way to see the server *hold* frames: it can write to a socket
    only as fast as the peer reads, so what it cannot write waits in the connection's queue.
    """

    def __init__(self, port: int, path: str, receive_buffer: int = 4096) -> None:
        self.sock = raw_handshake(port, path, receive_buffer=receive_buffer)
        self.data = bytearray()

    def send_json(self, event: dict[str, Any]) -> None:
        """One masked client text frame (a random key, as a real client's)."""
        self.sock.sendall(masked_frame(TEXT, json.dumps(event).encode(), os.urandom(4)))

    def read_until(self, needle: bytes, timeout: float = 5) -> None:
        """Read until ``needle`` has arrived (used before the client stalls)."""
        deadline = time.monotonic() + scaled(timeout)
        while needle not in self.data:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{needle!r} never arrived")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed early")
            self.data += chunk

    def read_to_end(self, timeout: float = 10) -> tuple[Received, bool]:
        """Read until the server closes or resets; returns what came and whether it was a reset."""
        deadline = time.monotonic() + scaled(timeout)
        reset = False
        while True:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionResetError:
                reset = True
                break
            if not chunk:
                break
            self.data += chunk
        received, _ = parse_frames(self.data)
        return received, reset

    def close(self) -> None:
        self.sock.close()
