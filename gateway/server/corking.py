"""Adaptive write corking: one ``send()`` per socket per event-loop tick under load.

Profiles of the fan-out at full rate put three quarters of the gateway's CPU in one
``transport.write`` per recipient per message: a system call and a TCP segment each. When
several broadcasts reach a socket in the same loop tick they can share one write: frames are
held ("corked") and written together by one callback the loop runs next.

Holding a frame costs its recipient up to a tick, so corking adapts. On a quiet loop a socket's
first frame of a tick goes out at once and only later ones wait. Once a flush finds any socket
with several frames (broadcasts are arriving faster than one per tick), the next tick corks
every frame, first ones included, until a flush finds nothing to combine. Under ``--workers N``
each worker sees every broadcast but fans out to fewer sockets, so ticks hold fewer broadcasts
each and the first-frame writes alone would dominate. Measured in loadtest/RESULTS.md.

The one rule that keeps this correct: nothing else may reach the socket ahead of corked frames.
:class:`FlushingTransport` stands in for the transport wherever the server's own code writes
(pongs, pings, close frames, the closing handshake), and flushes the cork before it does.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

CORK_LIMIT = 64 * 1024
"""Corked bytes per socket after which the socket reports itself unwritable for this tick, so a
burst lands in the connection's bounded send queue, where a slow consumer is noticed."""


class Corkable(Protocol):
    def uncork(self) -> None:
        """Write what is held."""


class TickFlusher:
    """The connections corked in this tick, flushed by one loop callback for all of them.

    A socket's first frame of a quiet tick is written at once and enlists nothing: the socket
    notes the tick's number (``tick``), which the flush moves on, so the quiet path (one
    broadcast per tick, 40 msg/s) costs no list entry, allocation or call per recipient.
    """

    __slots__ = ("_corked", "_loop", "busy", "combined", "scheduled", "tick")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._corked: list[Corkable] = []
        self.scheduled = False
        self.tick = 0
        """Moves on with every flush: a socket that wrote in this tick holds its next frames."""
        self.busy = False
        """Whether the last flush combined frames: if so, cork first frames too."""
        self.combined = False
        """Whether a socket got a second frame in this tick (the next tick is then busy)."""

    def schedule(self) -> None:
        """Flush once this tick is over (callers check ``scheduled`` first: it is hot)."""
        self.scheduled = True
        self._loop.call_soon(self._flush)

    def enlist(self, connection: Corkable) -> None:
        self._corked.append(connection)
        if not self.scheduled:
            self.schedule()

    def _flush(self) -> None:
        self.scheduled = False
        self.tick += 1
        self.busy, self.combined = self.combined, False
        corked, self._corked = self._corked, []
        for connection in corked:
            connection.uncork()


_flushers: dict[asyncio.AbstractEventLoop, TickFlusher] = {}


def flusher_for(loop: asyncio.AbstractEventLoop) -> TickFlusher:
    """One flusher per loop (a process normally runs one; tests may run several in turn)."""
    flusher = _flushers.get(loop)
    if flusher is None:
        for stale in [other for other in _flushers if other.is_closed()]:
            del _flushers[stale]
        flusher = _flushers[loop] = TickFlusher(loop)
    return flusher


class FlushingTransport:
    """The transport as the server's own code sees it: every write or close is ordered behind
    the frames the gateway has corked, so a close frame never overtakes a message."""

    __slots__ = ("_connection", "_transport")

    def __init__(self, connection: Corkable, transport: asyncio.Transport) -> None:
        self._connection = connection
        self._transport = transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._connection.uncork()
        self._transport.write(data)

    def writelines(self, chunks: Any) -> None:
        self._connection.uncork()
        self._transport.writelines(chunks)

    def close(self) -> None:
        self._connection.uncork()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
