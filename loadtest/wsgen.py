"""A lean WebSocket load generator: a raw asyncio protocol (run under uvloop) per connection.

Why not a WebSocket library: at saturation the generator reads well over 100k frames/s on a
single core, and a full client (per-frame objects, futures, queues) would become the
bottleneck before the server does. This client does just what a load run needs:

* the RFC 6455 opening handshake (no extension offered, so never permessage-deflate unless
  ``offer_deflate`` is set, and then only to see whether the server accepts it);
* a minimal frame parser for server frames (unmasked, text/binary/ping/close);
* client frames with an all-zero masking key: legal on the wire (the key "should" be
  unpredictable to protect browsers from cache poisoning, which does not apply here) and
  it spares a Python XOR per byte;
* pong for every ping, a close reply for every close.

Latency: every chat message the generator sends carries ``~t<19-digit monotonic ns>~`` in its
text. Each received text frame is scanned for that marker (a frame may hold several
newline-separated JSON objects when the server batches, or the seed's ``"id: text"``), so the
same scan works for the gateway's JSON and for the seed's plain text, and CLOCK_MONOTONIC is
shared by every process on the machine.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

MARK = b"~t"
TS_DIGITS = 19
monotonic_ns = time.monotonic_ns


@dataclass
class Stats:
    """Counters shared by every connection of one run (the generator is one process)."""

    deliveries: int = 0  # marker-bearing messages received, all connections
    frames: int = 0  # text frames received
    other_frames: int = 0  # text frames without a marker (presence, joins, errors, …)
    error_frames: int = 0
    last_error: str = ""
    reconnect_hints: int = 0
    closes: dict[int, int] = field(default_factory=dict)  # close code -> count
    unexpected_eof: int = 0
    pongs: int = 0
    recording: bool = False
    latencies: array[int] = field(default_factory=lambda: array("q"))

    def reset_latencies(self) -> None:
        self.latencies = array("q")


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One FIN frame from client to server, masked with the all-zero key."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + b"\x00\x00\x00\x00" + payload


def stamp() -> str:
    """The latency marker to put in a message's text."""
    return f"~t{monotonic_ns():019d}~"


class HandshakeError(Exception):
    pass


class WSClient(asyncio.Protocol):
    """One WebSocket connection. Counts into a shared :class:`Stats`."""

    def __init__(
        self,
        stats: Stats,
        host: str,
        port: int,
        path: str,
        *,
        offer_deflate: bool = False,
        on_text: Callable[[WSClient, bytes], None] | None = None,
    ) -> None:
        self.stats = stats
        self.host = host
        self.port = port
        self.path = path
        self.offer_deflate = offer_deflate
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.is_open = False
        self.deflate_accepted = False
        self.delivered = 0
        self.close_code: int | None = None
        self._handshaking = True
        self._buf = b""
        self._frag: list[bytes] = []
        self._frag_op = 0

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        key = base64.b64encode(os.urandom(16)).decode()
        ext = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if self.offer_deflate else ""
        request = (
            f"GET {self.path} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n"
        )
        self.transport.write(request.encode())

    def connection_lost(self, exc: Exception | None) -> None:
        was_open = self.is_open
        self.is_open = False
        if not self.ready.done():
            self.ready.set_exception(HandshakeError(f"connection lost during handshake: {exc}"))
        if was_open and self.close_code is None:
            self.stats.unexpected_eof += 1
        if not self.closed.done():
            self.closed.set_result(self.close_code if self.close_code is not None else 1006)

    def data_received(self, data: bytes) -> None:
        if self._buf:
            data = self._buf + data
            self._buf = b""
        if self._handshaking:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > 65536:
                    self._fail_handshake(data[:200])
                    return
                self._buf = data
                return
            head = data[:end]
            data = data[end + 4 :]
            if not head.startswith((b"HTTP/1.1 101", b"HTTP/1.0 101")):
                self._fail_handshake(head)
                return
            self._handshaking = False
            if self.ready.done():  # a 101 after the caller gave up waiting (timed out)
                self.abort()
                return
            self.is_open = True
            self.deflate_accepted = b"permessage-deflate" in head.lower()
            self.ready.set_result(None)
            if not data:
                return
        self._parse(data)

    # -- frames -----------------------------------------------------------------------------
    def _fail_handshake(self, head: bytes) -> None:
        if not self.ready.done():
            first = head.split(b"\r\n", 1)[0].decode("latin-1")
            self.ready.set_exception(HandshakeError(f"handshake refused: {first}"))
        if self.transport is not None:
            self.transport.close()

    def _parse(self, data: bytes) -> None:
        st = self.stats
        n = len(data)
        pos = 0
        now = monotonic_ns()
        append = st.latencies.append if st.recording else None
        find = data.find
        delivered = 0
        frames = 0
        while n - pos >= 2:
            b1 = data[pos + 1]
            ln = b1 & 0x7F
            if ln < 126:
                hl = 2
            elif ln == 126:
                if n - pos < 4:
                    break
                ln = (data[pos + 2] << 8) | data[pos + 3]
                hl = 4
            else:
                if n - pos < 10:
                    break
                ln = int.from_bytes(data[pos + 2 : pos + 10], "big")
                hl = 10
            if b1 & 0x80:  # a masked server frame is a protocol error; read past it anyway
                hl += 4
            end = pos + hl + ln
            if end > n:
                break
            b0 = data[pos]
            if b0 == 0x81:  # FIN + text: the hot path, scanned in place (no payload copy)
                frames += 1
                i = find(MARK, pos + hl, end)
                if i < 0:
                    self._other_text(data[pos + hl : end])
                else:
                    while i >= 0:
                        j = i + 2 + TS_DIGITS
                        if append is not None:
                            append(now - int(data[i + 2 : j]))
                        delivered += 1
                        i = find(MARK, j, end)
            else:
                self._control(b0, data[pos + hl : end])
            pos = end
        st.frames += frames
        if delivered:
            st.deliveries += delivered
            self.delivered += delivered
        if pos < n:
            self._buf = data[pos:]

    def _other_text(self, payload: bytes) -> None:
        st = self.stats
        st.other_frames += 1
        if b'"error"' in payload:
            st.error_frames += payload.count(b'"type":"error"') or 1
            st.last_error = payload[:300].decode("utf-8", "replace")
        if b'"reconnect"' in payload:
            st.reconnect_hints += 1
        if self.on_text is not None:
            self.on_text(self, payload)

    def _control(self, b0: int, payload: bytes) -> None:
        opcode = b0 & 0x0F
        fin = b0 & 0x80
        if opcode == 0x9:  # ping
            self.send_raw(client_frame(payload, 0xA))
        elif opcode == 0xA:
            self.stats.pongs += 1
        elif opcode == 0x8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.close_code = code
            self.stats.closes[code] = self.stats.closes.get(code, 0) + 1
            self.send_raw(client_frame(payload[:2], 0x8))
            self.is_open = False
            if self.transport is not None:
                self.transport.close()
        elif opcode in (0x1, 0x2) and not fin:
            self._frag = [payload]
            self._frag_op = opcode
        elif opcode == 0x0:
            self._frag.append(payload)
            if fin:
                whole = b"".join(self._frag)
                self._frag = []
                if self._frag_op == 0x1:
                    # Reassembled text frame: run it through the hot path's logic.
                    header = bytes((0x81, 127)) + len(whole).to_bytes(8, "big")
                    self._parse(header + whole)
        elif opcode == 0x2:
            self.stats.other_frames += 1
        elif opcode == 0x1:
            # Text with RSV bits set (compressed): counted, not decoded.
            self.stats.other_frames += 1

    # -- sending ----------------------------------------------------------------------------
    def send_raw(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def send_text(self, text: str) -> None:
        self.send_raw(client_frame(text.encode()))

    def ping(self) -> None:
        self.send_raw(client_frame(b"", 0x9))

    def close(self, code: int = 1000) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.is_open:
            self.close_code = code
            self.transport.write(client_frame(code.to_bytes(2, "big"), 0x8))
        self.is_open = False
        self.transport.close()

    def abort(self) -> None:
        self.is_open = False
        if self.transport is not None:
            self.transport.abort()

    def pause(self) -> None:
        """Stop reading: the kernel buffers fill and the server sees a stalled receiver."""
        if self.transport is not None:
            self.transport.pause_reading()


async def connect(
    stats: Stats,
    host: str,
    port: int,
    path: str,
    *,
    timeout_s: float = 10.0,
    attempts: int = 5,
    rcvbuf: int | None = None,
    offer_deflate: bool = False,
) -> WSClient:
    """Open one connection and finish its handshake (retrying refused or reset connects)."""
    loop = asyncio.get_running_loop()
    last: BaseException | None = None
    for attempt in range(attempts):
        sock: socket.socket | None = None
        try:
            if rcvbuf is not None:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                sock.setblocking(False)
                await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout_s)
                _, proto = await loop.create_connection(
                    lambda: WSClient(stats, host, port, path, offer_deflate=offer_deflate),
                    sock=sock,
                )
            else:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: WSClient(stats, host, port, path, offer_deflate=offer_deflate),
                        host,
                        port,
                    ),
                    timeout_s,
                )
            await asyncio.wait_for(proto.ready, timeout_s)
            return proto
        except (OSError, TimeoutError, HandshakeError) as exc:
            last = exc
            if sock is not None:
                sock.close()
            if isinstance(exc, HandshakeError) and "refused" in str(exc):
                raise
            await asyncio.sleep(0.05 * (2**attempt))
    raise ConnectionError(f"could not connect to {host}:{port}{path}: {last}")


async def connect_many(
    stats: Stats,
    host: str,
    port: int,
    paths: list[str],
    *,
    concurrency: int = 200,
    rcvbuf: dict[int, int] | None = None,
    deadline_s: float = 300.0,
    on_open: Callable[[int, WSClient], None] | None = None,
) -> list[WSClient]:
    """Open one connection per path (in order), ``concurrency`` handshakes at a time.

    ``on_open(index, client)`` runs right after each handshake (e.g. to send a join).
    """
    sem = asyncio.Semaphore(concurrency)
    rcv = rcvbuf or {}

    async def one(index: int, path: str) -> WSClient:
        async with sem:
            client = await connect(stats, host, port, path, rcvbuf=rcv.get(index))
            if on_open is not None:
                on_open(index, client)
            return client

    return await asyncio.wait_for(
        asyncio.gather(*(one(i, p) for i, p in enumerate(paths))), deadline_s
    )
