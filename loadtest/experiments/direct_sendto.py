"""Experiment: :mod:`loadtest.experiments.direct_send` with ``socket.send`` instead of ``os.write``.

``perf`` at 40k deliveries/s (loadtest/RESULTS.md, issue 19) shows the gateway's ``write()``
passing through the VFS (``vfs_write``, ``fdget_pos``) before ``tcp_sendmsg``, where Bun's
``sendto()`` goes to the socket at once. Here the frame goes out with ``sendto()``, as Bun's
does: a ``socket.socket`` made on the connection's fd (uvloop's ``PseudoSocket`` has no
``send``), detached at ``connection_lost`` so that it never closes the fd, which uvloop owns.
Everything else is as in ``direct_send``: only when the transport's buffer is empty and it is
not closing; what the kernel does not take goes to ``transport.write``.

    python -m loadtest.experiments.direct_sendto serve --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from gateway.cli import main
from gateway.server.wsprotocol import GatewayWebSocketProtocol
from loadtest.experiments.direct_send import uncork, write_now

_shipped_connection_made = GatewayWebSocketProtocol.connection_made
_shipped_connection_lost = GatewayWebSocketProtocol.connection_lost


def connection_made(self: GatewayWebSocketProtocol, transport: Any) -> None:
    _shipped_connection_made(self, transport)
    pseudo = transport.get_extra_info("socket")
    sock = None if pseudo is None else socket.socket(fileno=pseudo.fileno())
    if sock is not None:
        sock.setblocking(False)  # it is already: no poll in Python's send
    self._sock = sock  # type: ignore[attr-defined]
    self._raw_write = None if sock is None else sock.send  # type: ignore[attr-defined]


def connection_lost(self: GatewayWebSocketProtocol, exc: Exception | None) -> None:
    sock, self._sock = self._sock, None  # type: ignore[attr-defined]
    self._raw_write = None  # type: ignore[attr-defined]
    if sock is not None:
        sock.detach()  # uvloop closes the fd; a collected socket object must not close it again
    _shipped_connection_lost(self, exc)


def install() -> None:
    """``direct_send``'s ``write_now`` and ``uncork``, writing with this socket's ``send``."""
    protocol = GatewayWebSocketProtocol
    protocol.connection_made = connection_made  # type: ignore[method-assign]
    protocol.connection_lost = connection_lost  # type: ignore[method-assign]
    protocol.write_now = write_now  # type: ignore[method-assign]
    protocol.uncork = uncork  # type: ignore[method-assign]


if __name__ == "__main__":
    install()
    sys.exit(main(sys.argv[1:]))
