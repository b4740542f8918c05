"""The one writer of a connection: a bounded queue in front of the socket's send side.

Fan-out calls :meth:`Outbox.offer`, which never awaits: when the socket can take bytes now and
nothing is queued or being sent, the pre-encoded frame (shared by every recipient of the
broadcast) is written at once; otherwise the payload is queued for the writer task, which
coalesces a JSON backlog into one newline-delimited frame. A queue that reaches its bound marks
a slow consumer. Only the writer task and the synchronous fast path write, so no two writes
ever interleave.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from gateway import metrics
from gateway.disconnect import Disconnect
from gateway.frames import ClientGone, encode_text_frame
from gateway.protocol import WireFormat, encode_json, render_text

MAX_BATCH_CHARS = 64 * 1024
"""A coalesced frame stays well under common client frame limits (websockets: 1 MiB)."""


class OutFrame:
    """One server event, encoded at most once per wire format however many receive it."""

    __slots__ = ("_payloads", "channel", "event", "seq", "wires")

    def __init__(self, event: dict[str, Any], channel: str = "", seq: int = 0) -> None:
        self.event = event
        self.channel = channel
        self.seq = seq
        self._payloads: dict[WireFormat, str | None] = {}
        self.wires: dict[WireFormat, bytes | None] = {}
        """The frames encoded so far: the fan-out reads this first, one lookup and no call."""

    def payload(self, wire: WireFormat) -> str | None:
        try:
            return self._payloads[wire]
        except KeyError:
            text = encode_json(self.event) if wire is WireFormat.JSON else render_text(self.event)
            self._payloads[wire] = text
            return text

    def wire(self, wire: WireFormat) -> bytes | None:
        try:
            return self.wires[wire]
        except KeyError:
            payload = self.payload(wire)
            data = None if payload is None else encode_text_frame(payload)
            self.wires[wire] = data
            return data


class FrameSink(Protocol):
    """The send side of one socket, as the transport layer provides it."""

    def write_now(self, data: bytes) -> bool:
        """Write ``data`` now if the socket takes it without growing an unbounded buffer;
        False: nothing was written (the outbox queues the frame for :meth:`send_text`)."""

    async def send_text(self, payload: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...

    def abort(self) -> bool:
        """Cut the connection without a closing handshake; False where the server can't."""


class Outbox:
    """A connection's send queue and its writer task, both created only when needed.

    An idle connection holds neither: the queue exists from the first payload that cannot be
    written at once, and the writer task runs while something is queued or a close is pending,
    then ends (dropping the empty queue); the next queued payload starts a new one.
    """

    __slots__ = (
        "_blocked_send",
        "_finished",
        "_queue",
        "_writer",
        "closing",
        "limit",
        "on_overflow",
        "sink",
        "wire",
    )

    def __init__(self, sink: FrameSink, wire: WireFormat, limit: int) -> None:
        self.sink = sink
        self.wire = wire
        self.limit = limit
        self.on_overflow: Callable[[], None] = _nothing
        """Set by the owning session: what a full queue means is its decision."""
        self.closing: Disconnect | None = None
        self._queue: deque[str] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._blocked_send: asyncio.Task[None] | None = None
        self._finished = False

    def __len__(self) -> int:
        return len(self._queue) if self._queue is not None else 0

    @property
    def writer(self) -> asyncio.Task[None] | None:
        """The running writer task, if any (to wait for a close to go out)."""
        return self._writer

    @property
    def finished(self) -> bool:
        """Whether the writer is done for good: the close was sent or the peer is gone."""
        return self._finished

    def offer(self, frame: OutFrame) -> None:
        """Write ``frame`` now when the socket takes it, else queue it for the writer task."""
        if self.put(frame):
            count_delivered(1)

    def put(self, frame: OutFrame) -> bool:
        """:meth:`offer` without counting: True when the frame was written at once, which the
        caller counts (the hub's fan-out once per broadcast, not once per recipient)."""
        if self.closing is not None:
            return False
        if self._writer is None and not self._queue:
            data = frame.wires.get(self.wire) or frame.wire(self.wire)
            if data is None:
                return False
            if self.sink.write_now(data):
                return True
        payload = frame.payload(self.wire)
        if payload is None:
            return False
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        if len(queue) >= self.limit:
            self.on_overflow()
            return False
        queue.append(payload)
        self._start_writer()
        return False

    def close(self, disconnect: Disconnect, *, flush: bool) -> None:
        """Ask the writer to close after flushing what is queued (``flush``) or dropping it."""
        if self.closing is not None:
            return
        self.closing = disconnect
        if not flush:
            if self._queue is not None:
                self._queue.clear()
            if self._blocked_send is not None:
                self._blocked_send.cancel()
        self._start_writer()

    def _start_writer(self) -> None:
        if self._writer is None and not self._finished:
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        """The writer task: drains the queue, then closes if asked, else ends until needed."""
        try:
            while queue := self._queue:
                payload, count = self._take_batch(queue)
                if await self._send(payload):
                    count_delivered(count)
            if self.closing is None:
                self._queue = None
                return
            await self.sink.close(self.closing.code, self.closing.detail)
        except ClientGone:
            pass
        finally:
            self._writer = None
        self._finished = True

    async def _send(self, payload: str) -> bool:
        """Send one frame; False when a close without flush abandoned it (the peer is stuck)."""
        self._blocked_send = asyncio.ensure_future(self.sink.send_text(payload))
        try:
            await asyncio.shield(self._blocked_send)
        except asyncio.CancelledError:
            if not self._blocked_send.cancelled():
                self._blocked_send.cancel()
                raise
            return False
        finally:
            self._blocked_send = None
        return True

    def _take_batch(self, queue: deque[str]) -> tuple[str, int]:
        if self.wire is WireFormat.TEXT or len(queue) == 1:
            return queue.popleft(), 1
        batch = [queue.popleft()]
        size = len(batch[0])
        while queue and size + len(queue[0]) < MAX_BATCH_CHARS:
            size += len(queue[0]) + 1
            batch.append(queue.popleft())
        return "\n".join(batch), len(batch)


def _nothing() -> None:
    pass


class _DeliveryCount:
    """Frames written by every outbox of the process, folded into
    ``gateway_messages_delivered_total`` once per loop tick: a fan-out to N recipients costs
    one metric update, not N (a multiprocess counter update takes a lock and an mmap write)."""

    __slots__ = ("loop", "pending")

    def __init__(self) -> None:
        self.pending = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    def add(self, count: int) -> None:
        if not count:
            return
        if not self.pending:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a synchronous caller): count at once
                metrics.MESSAGES_DELIVERED.inc(count)
                return
            loop.call_soon(self.fold)
            self.loop = loop
        elif self.loop is not None and self.loop.is_closed():
            self.fold()  # the loop that was to fold went away before its next tick
            self.add(count)
            return
        self.pending += count

    def fold(self) -> None:
        pending, self.pending = self.pending, 0
        if pending:
            metrics.MESSAGES_DELIVERED.inc(pending)


_delivered = _DeliveryCount()
count_delivered = _delivered.add
"""Count frames written to a socket (the only place deliveries are counted)."""
