"""uvicorn's httptools protocol with a deadline on the handshake and a cap on sockets.

uvicorn arms no timer on a fresh connection (its keep-alive timer starts after a response, and
the first byte of a next request cancels it), so a client that connects and stays silent, or
sends its request a byte at a time, holds a socket forever; enough of them exhaust the process's
file descriptors and nobody, ``/healthz`` included, gets in (SPEC "Hardening",
``GATEWAY_HANDSHAKE_TIMEOUT``). This protocol

* gives every TCP connection ``GATEWAY_HANDSHAKE_TIMEOUT`` seconds to complete its HTTP request,
  or its WebSocket upgrade up to the app's accept or refusal, and again from each response to
  the next complete request on a kept-alive connection; the timer is dropped once the request
  is in (for a WebSocket: at the accept, see :class:`GatewayWebSocketProtocol`);
* counts every socket the server holds (pending handshakes, HTTP requests, WebSockets; uvicorn's
  ``server_state.connections``) against ``GATEWAY_MAX_CONNECTIONS``, and closes a new TCP
  connection at once, before parsing a byte, when they are over it by more than a headroom: the
  headroom lets a WebSocket beyond the limit still be read and hear its 1013 from the hub.

Both cuts are counted in ``gateway_connections_refused_total{reason}``. Under gunicorn every
worker gets this class through :func:`gateway.server.options.uvicorn_options`, like
``gateway serve``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.server.wsprotocol import GatewayWebSocketProtocol

TIMED_OUT = "handshake_timeout"
OVER_CAPACITY = "over_capacity"


def headroom(max_connections: int) -> int:
    """Sockets beyond ``GATEWAY_MAX_CONNECTIONS`` still read, so excess WebSockets get a 1013."""
    return max(16, max_connections // 16)


def _count(reason: str) -> None:
    # Imported here: this module is imported by the gunicorn master, which must not create
    # metrics before PROMETHEUS_MULTIPROC_DIR is set up (gateway.server.worker).
    from gateway import metrics

    metrics.CONNECTIONS_REFUSED.labels(reason).inc()


class GatewayHttpProtocol(HttpToolsProtocol):
    handshake_timeout = 10.0
    capacity = 0
    """Sockets at which a new connection is closed unread; 0: no cap."""
    _deadline: asyncio.TimerHandle | None = None

    @classmethod
    def configured(
        cls, handshake_timeout: float, max_connections: int
    ) -> type[GatewayHttpProtocol]:
        capacity = max_connections + headroom(max_connections) if max_connections else 0
        attributes = {"handshake_timeout": handshake_timeout, "capacity": capacity}
        return type(cls.__name__, (cls,), attributes)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.capacity and len(self.connections) > self.capacity:
            _count(OVER_CAPACITY)
            transport.close()
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:
            self._arm()

    def handle_websocket_upgrade(self) -> None:
        """The WebSocket protocol takes the socket, and the deadline with it until it accepts."""
        deadline, self._deadline = self._deadline, None
        super().handle_websocket_upgrade()
        protocol: Any = self.transport.get_protocol()
        if deadline is None:
            return
        if isinstance(protocol, GatewayWebSocketProtocol) and not protocol.handshake_complete:
            protocol.handshake_deadline = deadline
        else:
            deadline.cancel()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.handshake_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        transport = self.transport
        protocol = transport.get_protocol()
        if transport.is_closing() or getattr(protocol, "handshake_complete", False):
            return
        if isinstance(protocol, GatewayWebSocketProtocol):
            protocol.drop_handshake_deadline()
        _count(TIMED_OUT)
        transport.abort()
