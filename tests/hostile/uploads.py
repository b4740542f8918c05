"""A hostile uploader over a bare socket, and the server's memory as /proc tells it.

httpx sends a whole body before it reads the answer, so a server that refuses early looks like
a broken pipe to it. This client sends the body a piece at a time and stops as soon as the
server answers, closes or stops reading: what it reports is the status the server chose and how
much of the body went out before it did.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.servers import scaled

PIECE = 64 * 1024


@dataclass(frozen=True)
class Upload:
    status: int | None
    """``None``: the server closed without an answer this client could read."""
    sent: int
    head: bytes


def vm_kib(pid: int, field: str = "VmHWM") -> int:
    """``VmHWM`` is the peak resident set since the process started: a body held for a moment
    still shows, with no sampling race."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def upload(
    port: int,
    path: str,
    total: int,
    headers: dict[str, str] | None = None,
    chunked: bool = False,
    timeout: float = 60,
) -> Upload:
    """POST ``total`` bytes of ``x`` to ``path``, with ``Content-Length`` or chunked."""
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
    deadline = time.monotonic() + scaled(timeout)
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(5)) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        with contextlib.suppress(OSError):
            for piece in json_pieces(total):
                if time.monotonic() > deadline or select.select([sock], [], [], 0)[0]:
                    break
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
                sent += len(piece)
            else:
                if chunked:
                    sock.sendall(b"0\r\n\r\n")
        head = _read_head(sock, deadline)
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else None
    return Upload(status, sent, head)


def json_pieces(total: int) -> Iterator[bytes]:
    """``{"text": "xx…x"}`` of exactly ``total`` bytes, a piece at a time (never held whole):
    a valid body, so a server that parses it gets as far as its own checks."""
    prefix, suffix = b'{"text": "', b'"}'
    filler = total - len(prefix) - len(suffix)
    yield prefix
    for _ in range(filler // PIECE):
        yield b"x" * PIECE
    if filler % PIECE:
        yield b"x" * (filler % PIECE)
    yield suffix


def _read_head(sock: socket.socket, deadline: float) -> bytes:
    head = b""
    with contextlib.suppress(OSError):
        for _ in range(1000):
            if b"\r\n\r\n" in head or time.monotonic() > deadline:
                break
            data = sock.recv(4096)
            if not data:
                break
            head += data
    return head
