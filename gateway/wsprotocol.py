"""uvicorn's sans-I/O websockets protocol, extended with what a gateway needs from it.

Why a subclass: ASGI hides control frames, so an app can neither ping nor know that a peer
stopped answering pings. uvicorn's ``websockets-sansio`` implementation does ping (a timer per
connection, no task), but reports a dead peer as an ordinary close. This subclass

* jitters the first ping, so a reconnect storm does not ping in lockstep forever after;
* records a missed pong, so the app can count ``heartbeat_timeout`` closes;
* lets the app write a pre-encoded frame straight to the transport: a server frame is unmasked,
  so one encoding of a broadcast serves every recipient without an ASGI round trip each;
* closes without waiting for a writable socket (a slow consumer's buffer may never drain).

The app finds it in ``scope["extensions"]["gateway.transport"]``; under any other server the
extension is absent and the app falls back to plain ASGI sends.
"""

from __future__ import annotations

import random
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

EXTENSION = "gateway.transport"


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    heartbeat_timed_out = False

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][EXTENSION] = self

    def start_keepalive(self) -> None:
        if self.ping_interval is not None and self.ping_interval > 0:
            first = self.ping_interval * random.uniform(0.5, 1.0)
            self.ping_timer = self.loop.call_later(first, self.send_keepalive_ping)

    def keepalive_timeout(self) -> None:
        self.heartbeat_timed_out = True
        super().keepalive_timeout()

    def can_write(self) -> bool:
        return (
            self.handshake_complete
            and not self.close_sent
            and not self.disconnected
            and self.writable.is_set()
        )

    def write_frame(self, data: bytes) -> None:
        self.transport.write(data)

    async def wait_writable(self) -> None:
        await self.writable.wait()

    @property
    def gone(self) -> bool:
        return self.disconnected or self.close_sent or self.transport.is_closing()

    def close_now(self, code: int, reason: str) -> None:
        """Send a close frame behind whatever is buffered; abort if the peer never answers."""
        if self.gone:
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)
