"""Clients for drain tests: one that stops reading on command, and readers that record a close.

A stalled reader is the only way to see a drain *hold* frames: the server can write to a socket
only as fast as the peer reads, so what it cannot write waits in the connection's queue, and
the drain must flush that queue before its close. The raw client below gets a tiny kernel
receive buffer and reads nothing until told, then parses every byte that came, so a test can
say exactly what the client got before the connection ended, and how it ended.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.support.servers import scaled

CLOSE = 0x8
TEXT = 0x1


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


def parse_frames(data: bytes | bytearray) -> tuple[Received, int]:
    """Parse unmasked server frames; returns what they say and how many bytes were whole frames."""
    received = Received()
    offset = 0
    while len(data) - offset >= 2:
        opcode, length = data[offset] & 0x0F, data[offset + 1] & 0x7F
        header = 2
        if length == 126:
            if len(data) - offset < 4:
                break
            (length,) = struct.unpack_from("!H", data, offset + 2)
            header = 4
        elif length == 127:
            if len(data) - offset < 10:
                break
            (length,) = struct.unpack_from("!Q", data, offset + 2)
            header = 10
        if len(data) - offset < header + length:
            break
        payload = data[offset + header : offset + header + length]
        offset += header + length
        if opcode == TEXT:
            text = payload.decode()
            received.texts.append(text)
            if text.startswith("{"):
                received.events.extend(json.loads(line) for line in text.split("\n") if line)
        elif opcode == CLOSE:
            received.close_code = struct.unpack_from("!H", payload)[0] if payload else 1005
            break
    return received, offset


class StalledClient:
    """A WebSocket client on a bare socket with a small receive buffer that reads only on demand."""

    def __init__(self, port: int, path: str, receive_buffer: int = 4096) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(scaled(5))
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while not head.endswith(b"\r\n\r\n"):  # byte by byte: not one frame byte is consumed
            byte = self.sock.recv(1)
            if not byte:
                raise ConnectionError("closed during the handshake")
            head += byte
        assert head.startswith(b"HTTP/1.1 101"), head
        self.data = bytearray()

    def send_json(self, event: dict[str, Any]) -> None:
        """One masked client text frame."""
        payload = json.dumps(event).encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        length = len(payload)
        if length < 126:
            header = bytes([0x80 | TEXT, 0x80 | length])
        else:
            header = bytes([0x80 | TEXT, 0x80 | 126]) + struct.pack("!H", length)
        self.sock.sendall(header + mask + masked)

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


async def record(ws: ClientConnection, within: float = 10) -> Received:
    """Read a ``websockets`` connection until the server closes it (``within`` seconds, scaled)."""
    received = Received()
    async with asyncio.timeout(scaled(within)):
        try:
            async for frame in ws:
                assert isinstance(frame, str)
                received.texts.append(frame)
                if frame.startswith("{"):
                    received.events.extend(json.loads(line) for line in frame.split("\n") if line)
        except ConnectionClosed:
            pass
    close = ws.protocol.close_rcvd
    received.close_code = close.code if close is not None else None
    return received


class ExitWatch:
    """Notes the moment a process exits, however busy the test is when it happens."""

    def __init__(self, wait: Callable[[], object]) -> None:
        self.started = time.monotonic()
        self.exited_at: float | None = None
        self._wait = wait
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    @classmethod
    def of(cls, process: subprocess.Popen[bytes]) -> ExitWatch:
        return cls(process.wait)

    @classmethod
    def of_pid(cls, pid: int) -> ExitWatch:
        """For a process that is not our child (a gunicorn worker): poll /proc."""

        def gone() -> None:
            while True:
                try:
                    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                except OSError:
                    return
                if state in ("Z", "X"):
                    return
                time.sleep(0.01)

        return cls(gone)

    def _watch(self) -> None:
        self._wait()
        self.exited_at = time.monotonic()

    def seconds(self, timeout: float) -> float:
        """Seconds from the watch's start to the exit; waits up to ``timeout`` (scaled)."""
        self._thread.join(scaled(timeout))
        assert self.exited_at is not None, f"still running after {scaled(timeout):.1f} s"
        return self.exited_at - self.started
