"""Experiment: the protocol's frames written with ``os.write`` on the socket, past uvloop.

Shipped, the fan-out's frame goes through uvloop's ``transport.write`` (the protocol's
``write_now`` for a socket's first frame of a tick, ``uncork`` for the combined ones): uvloop
appends it to its buffer list, calls ``write()`` on the fd at once when nothing is queued
(``UVStream._try_write``), clears the list and checks for flow control. Profiles put about 70 %
of the gateway's samples at 40k deliveries/s inside that call (issue 19). Here the protocol
writes the frame to the connection's fd itself when the transport's write buffer is empty
and it is not closing, and hands only what the kernel did not take (a partial write, EAGAIN)
to ``transport.write``, which then buffers it as before: ordering holds (anything buffered
makes every later frame go through the transport), and a slow consumer still fills the
transport's buffer past its high-water mark, so the send queue and the 1013 close work as
shipped. Any other error is left to ``transport.write`` to meet again and close the connection
as it always does.

``os.write`` and not ``socket.send``: uvloop hands out a ``PseudoSocket`` that has no
``send``, and a ``socket.socket`` made on the fd would close it when collected. On a TCP socket
``write()`` and ``send()`` without flags take the same path in the kernel (``sock_sendmsg``).

    python -m loadtest.experiments.direct_send serve --host 127.0.0.1 --port 8000
    python -m loadtest.bench --scenario closeness --variant direct=loadtest.experiments.direct_send
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from collections.abc import Callable
from typing import Any

from gateway.cli import main
from gateway.server.corking import CORK_LIMIT
from gateway.server.wsprotocol import GatewayWebSocketProtocol

RawWrite = Callable[[bytes | bytearray], int]
"""Writes to the connection's socket past uvloop; returns what the kernel took."""

_shipped_connection_made = GatewayWebSocketProtocol.connection_made


def send(transport: asyncio.Transport, write: RawWrite | None, data: bytes | bytearray) -> None:
    """``write`` ``data`` if nothing is queued before it; the rest to the transport."""
    if write is None or transport.get_write_buffer_size() or transport.is_closing():
        transport.write(data)
        return
    try:
        sent = write(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:
        transport.write(data)  # it meets the same error and closes the connection as shipped
        return
    if sent < len(data):
        transport.write(memoryview(data)[sent:])


def connection_made(self: GatewayWebSocketProtocol, transport: Any) -> None:
    _shipped_connection_made(self, transport)
    sock = transport.get_extra_info("socket")
    raw = None if sock is None else functools.partial(os.write, sock.fileno())
    self._raw_write = raw  # type: ignore[attr-defined]


def write_now(self: GatewayWebSocketProtocol, data: bytes) -> bool:
    """The shipped ``write_now`` with :func:`send` in place of ``transport.write``."""
    if not (
        self.handshake_complete
        and not self.close_sent
        and not self.disconnected
        and self._writable._value
    ):
        return False
    corked = self._corked
    flusher = self._flusher
    if corked is not None:
        if len(corked) >= CORK_LIMIT:
            return False
        corked += data
        flusher.combined = True
    elif self._tick == flusher.tick:
        self._corked = bytearray(data)
        flusher.combined = True
        flusher.enlist(self)
    elif flusher.busy:
        self._corked = bytearray(data)
        flusher.enlist(self)
    else:
        self._tick = flusher.tick
        if not flusher.scheduled:
            flusher.schedule()
        send(self._raw_transport, self._raw_write, data)  # type: ignore[attr-defined]
    return True


def uncork(self: GatewayWebSocketProtocol) -> None:
    corked = self._corked
    if corked is not None:
        self._corked = None
        if not self._raw_transport.is_closing():
            send(self._raw_transport, self._raw_write, corked)  # type: ignore[attr-defined]


def install() -> None:
    GatewayWebSocketProtocol.connection_made = connection_made  # type: ignore[method-assign]
    GatewayWebSocketProtocol.write_now = write_now  # type: ignore[method-assign]
    GatewayWebSocketProtocol.uncork = uncork  # type: ignore[method-assign]


if __name__ == "__main__":
    install()
    sys.exit(main(sys.argv[1:]))
