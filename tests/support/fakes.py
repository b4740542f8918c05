"""Stand-ins for what surrounds the framework-free core, so it runs without sockets or servers:
a socket's send side (:class:`FakeSink`), a broker's ``deliver`` callback (:class:`Inbox`), and
sample envelopes."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from gateway.broker import Envelope, room_channel
from gateway.frames import ClientGone
from tests.support.servers import scaled

TRACE = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


def frame_text(frame: bytes) -> str:
    """The payload of an unmasked server text frame, as the outbox writes it."""
    length = frame[1] & 0x7F
    header = 2 if length < 126 else 4 if length == 126 else 10
    return frame[header:].decode()


class FakeSink:
    """A socket's send side (a :class:`gateway.outbox.FrameSink`; mypy checks that wherever an
    ``Outbox`` is built on one) that records what a connection would have written. It can
    pretend the socket is full (``writable``), make the writer's send wait (``unblocked``), the
    peer gone (``gone``: the next send raises ClientGone), or a server that cannot abort."""

    def __init__(self, abortable: bool = True) -> None:
        self.writable = True
        self.raw: list[bytes] = []
        """The frames written at once (``write_now``), each the very object the outbox gave."""
        self.sent: list[str] = []
        """The texts the writer task sent (``send_text``)."""
        self.written: list[str] = []
        """Every text that reached the socket, in order, fast path and writer alike."""
        self.closed: tuple[int, str] | None = None
        self.aborted = False
        self.abortable = abortable
        self.unblocked = asyncio.Event()
        self.unblocked.set()
        self.gone = False
        self.send_started = asyncio.Event()

    def write_now(self, data: bytes) -> bool:
        if not self.writable:
            return False
        self.raw.append(data)
        self.written.append(frame_text(data))
        return True

    async def send_text(self, payload: str) -> None:
        self.send_started.set()
        await self.unblocked.wait()
        if self.gone:
            raise ClientGone
        self.sent.append(payload)
        self.written.append(payload)

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def abort(self) -> bool:
        self.aborted = True
        return self.abortable

    def events(self) -> list[dict[str, Any]]:
        """The JSON events of the frames written at once, then of the texts the writer sent."""
        texts = [frame_text(frame) for frame in self.raw] + self.sent
        return [json.loads(line) for text in texts for line in text.split("\n")]


class Inbox:
    """The ``deliver`` callback of a broker: everything it delivered, in order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Envelope] = asyncio.Queue()

    def __call__(self, envelope: Envelope) -> None:
        self.queue.put_nowait(envelope)

    async def next(self, seconds: float = 5) -> Envelope:
        async with asyncio.timeout(scaled(seconds)):
            return await self.queue.get()

    async def take(self, count: int, seconds: float = 5) -> list[Envelope]:
        return [await self.next(seconds) for _ in range(count)]


def message(room: str, text: str) -> Envelope:
    """A chat message from alice to ``room``, carrying a trace context."""
    event = {"type": "message", "id": "", "room": room, "from": "alice", "text": text}
    return Envelope(room_channel(room), event, time.time(), trace=dict(TRACE))
