"""uvicorn's sans-I/O websockets protocol, extended with what a gateway needs from it.

Why a subclass: ASGI hides control frames, so an app can neither ping nor know that a peer
stopped answering pings. uvicorn's ``websockets-sansio`` implementation does ping (a timer per
connection, no task), but reports a dead peer as an ordinary close. This subclass

* jitters the first ping, so a reconnect storm does not ping in lockstep forever after;
* records a missed pong, so the app can count ``heartbeat_timeout`` closes;
* lets the app write a pre-encoded frame straight to the transport: a server frame is unmasked,
  so one encoding of a broadcast serves every recipient without an ASGI round trip each;
* corks a socket's second and later frames of one loop tick into one write
  (gateway/server/corking.py);
* closes without waiting for a writable socket (a slow consumer's buffer may never drain), and
  aborts a close that the peer's unread buffer would hold forever;
* counts the pongs it owes a peer that does not read against the send queue: past it the peer
  is a slow consumer (1013), so a ping flood cannot grow the server's buffers;
* holds the reply to a client's close frame (bounded) until the app released the client's id,
  so a client that saw its close complete can reconnect with the same id at once;
* forgets the handshake once the connection is accepted: the parsed request's and the
  response's headers, and the scope's header list (a connection lives for hours, idle);
* replaces uvicorn's per-connection ``asyncio.Queue`` and ``asyncio.Event`` by equivalents that
  allocate nothing until used (they preallocate five deques, ~4 KiB, per connection).

The app finds it in ``scope["extensions"]["gateway.server.transport"]``; under any other server the
extension is absent and the app falls back to plain ASGI sends.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from typing import TYPE_CHECKING, Any, Literal, cast

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from gateway.disconnect import SLOW_CONSUMER
from gateway.frames import ClientGone, encode_text_frame
from gateway.server.corking import CORK_LIMIT, FlushingTransport, TickFlusher, flusher_for

if TYPE_CHECKING:
    from uvicorn._types import ASGIReceiveEvent
    from uvicorn.config import Config
    from uvicorn.server import ServerState

EXTENSION = "gateway.server.transport"
CLOSE_REPLY_HOLD = 2.0
"""Longest a client's close frame waits for its reply while the app releases the id."""
PONG = b"\x8a"
"""First byte of a server pong (FIN, opcode 0xA, unmasked): websockets queues one per ping."""


class _ClientFaultLog(logging.LoggerAdapter[logging.Logger]):
    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.info(msg, *args)


class _LifecycleLog(logging.LoggerAdapter[logging.Logger]):
    """uvicorn's ``[accepted]`` and websockets' ``connection open``/``closed`` lines at debug:
    at info they repeated the gateway's own ``connection opened``/``closed`` records (which
    carry the connection id and user), three lines for one handshake, and formatting them was
    a tenth of a worker's CPU in a reconnect storm."""

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)


_LIFECYCLE_LOG = _LifecycleLog(logging.getLogger("uvicorn.error"))


class ReceiveQueue:
    """What uvicorn uses of ``asyncio.Queue`` for a connection's received events, for its one
    reader (the app's ``receive``): a list, and a future only while the reader waits."""

    __slots__ = ("_getter", "_items")

    def __init__(self) -> None:
        self._items: list[ASGIReceiveEvent] = []
        self._getter: asyncio.Future[None] | None = None

    def put_nowait(self, item: ASGIReceiveEvent) -> None:
        self._items.append(item)
        if self._getter is not None and not self._getter.done():
            self._getter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> ASGIReceiveEvent:
        while not self._items:
            if self._getter is not None:
                raise RuntimeError("receive() is already being awaited")
            self._getter = asyncio.get_running_loop().create_future()
            try:
                await self._getter
            finally:
                self._getter = None
        return self._items.pop(0)


class Flag:
    """``asyncio.Event``'s interface; the waiters' list exists only while someone waits."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if self._value:
            return
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> Literal[True]:
        if self._value:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    heartbeat_timed_out = False
    hold_close_reply = False
    """Set by the app: a client's close frame is answered by :meth:`send_close_reply`."""
    _close_reply: asyncio.TimerHandle | None = None
    slow_consumer = False
    """Set when the peer's unanswered pings overflowed the send queue (closed with 1013)."""
    send_queue = 1000
    """Pongs a peer may be owed while its socket is not writable (``GATEWAY_SEND_QUEUE``)."""
    _pongs_held = 0
    handshake_deadline: asyncio.TimerHandle | None = None
    """``GATEWAY_HANDSHAKE_TIMEOUT``'s timer, handed over by the HTTP protocol at the upgrade
    (gateway/server/handshake.py) and dropped at the accept or refusal."""
    _raw_transport: asyncio.Transport
    _flusher: TickFlusher
    _corked: bytearray | None = None
    """None: nothing held; else the frames held for the flush (a bytearray, which the cyclic GC
    does not track: a container per recipient per message, alive until the next tick, drove it
    into full collections, 100 ms stalls at 40k deliveries/s)."""
    _tick = -1
    """The flusher's tick in which this socket last wrote a frame at once."""
    send_buffer_bytes = 0
    """Kernel send buffer per socket (SO_SNDBUF); 0 keeps the OS default.

    Linux autotunes a stalled peer's buffer up to ``tcp_wmem`` max (4 MiB here): that much
    per connection hides a slow consumer from the send queue and costs kernel memory.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.conn.logger = _LIFECYCLE_LOG
        # uvicorn only calls put_nowait/get/empty and set/clear/is_set/wait on these.
        self.queue = ReceiveQueue()  # type: ignore[assignment]
        self.writable = self._writable = Flag()  # type: ignore[assignment]
        self._writable.set()  # _writable: the Flag's type, read by write_now without a call

    @classmethod
    def configured(
        cls, send_buffer_bytes: int, send_queue: int = 1000
    ) -> type[GatewayWebSocketProtocol]:
        attributes = {"send_buffer_bytes": send_buffer_bytes, "send_queue": send_queue}
        return type(cls.__name__, (cls,), attributes)

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._raw_transport = transport
        self._flusher = flusher_for(self.loop)
        self.transport = cast(asyncio.Transport, FlushingTransport(self, transport))
        sock = transport.get_extra_info("socket")
        if self.send_buffer_bytes and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer_bytes)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][EXTENSION] = self
        # The scope has its own copy of the headers now. websockets' parser keeps the Request
        # for the connection's life (a local of its generator), so empty it rather than drop it.
        event.headers.clear()

    def start_keepalive(self) -> None:
        if self.ping_interval is not None and self.ping_interval > 0:
            first = self.ping_interval * random.uniform(0.5, 1.0)
            self.ping_timer = self.loop.call_later(first, self.send_keepalive_ping)

    def keepalive_timeout(self) -> None:
        """Tell the app at once: uvicorn only does when the connection is lost, which a peer
        that does not read delays until the close below is aborted."""
        self.heartbeat_timed_out = True
        super().keepalive_timeout()
        if self.close_sent and not self.disconnected:
            self.queue.put_nowait({"type": "websocket.disconnect", "code": 1011})
        self._abort_later()

    def _abort_later(self) -> None:
        """``transport.close()`` waits for the write buffer to drain, which a peer that does
        not read never lets happen: the socket would stay open for good."""
        if self.close_timer is None and not self.disconnected and self.transport.is_closing():
            self.close_timer = self.loop.call_later(self.close_timeout, self._raw_transport.abort)

    def handle_ping(self) -> None:
        """Answer a ping unless the peer owes us reading: pongs to a socket that is not
        writable count against the send queue, and past it the peer is a slow consumer; after
        our close, pings get no answer (websockets would still queue one per ping)."""
        frames = self.conn.data_to_send()
        if not self.close_sent and not self.writable.is_set():
            self._pongs_held += sum(1 for frame in frames if frame[:1] == PONG)
            if self._pongs_held > self.send_queue:
                self.slow_consumer = True
                self._write_all(frame for frame in frames if frame[:1] != PONG)
                self.close_now(SLOW_CONSUMER.code, SLOW_CONSUMER.detail)
                # Nothing it sends matters now; reading on would only burn CPU on its flood
                # until close_timeout aborts the connection.
                self._raw_transport.pause_reading()
                return
        elif self.close_sent:
            frames = [frame for frame in frames if frame[:1] != PONG]
        self._write_all(frames)

    def _write_all(self, frames: Any) -> None:
        data = b"".join(frames)
        if data:
            self.transport.write(data)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._pongs_held = 0

    def data_received(self, data: bytes) -> None:
        """uvicorn never flushes the HTTP error the websockets parser answers a malformed
        handshake with (414 for a request line over 8 KiB, 400 for bad headers): without this
        the connection hangs, holding a socket, until the client gives up."""
        super().data_received(data)
        if not self.handshake_initiated and not self.transport.is_closing():
            rejection = self.conn.data_to_send()
            if rejection:
                self.transport.write(b"".join(rejection))
                self.transport.close()

    def send_receive_event_to_app(self) -> None:
        """uvicorn logs invalid UTF-8 from a client as an error with a traceback; it is the
        client's fault (answered with 1007, counted as ``policy``), so one line at info."""
        logger, self.logger = self.logger, _ClientFaultLog(self.logger)  # type: ignore[assignment]
        try:
            super().send_receive_event_to_app()
        finally:
            self.logger = logger

    async def send(self, message: Any) -> None:
        """uvicorn's sans-I/O protocol sends a denial response (``websocket.http.response``,
        the gateway's 403/429) but leaves the handshake marked incomplete, then logs an error
        for every refused handshake: a flood of refusals must not flood the error log."""
        if message["type"] == "websocket.accept":
            logger, self.logger = self.logger, _LIFECYCLE_LOG  # type: ignore[assignment]
            try:
                await super().send(message)
            finally:
                self.logger = logger
        else:
            await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            self.handshake_complete = True
        elif message["type"] == "websocket.accept" and self.handshake_complete:
            self._forget_handshake()
        if self.handshake_complete:
            self.drop_handshake_deadline()

    def drop_handshake_deadline(self) -> None:
        if self.handshake_deadline is not None:
            self.handshake_deadline.cancel()
            del self.handshake_deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self.drop_handshake_deadline()
        super().connection_lost(exc)

    def _forget_handshake(self) -> None:
        """Drop what only the handshake needed, about 2 KiB per connection.

        The app decides on the headers (origin, host, token, subprotocols) before it accepts;
        after that nothing reads them, so the scope's list is emptied in place (Starlette's
        ``Headers`` of the connection share it, and read as empty from here on).
        """
        del self.response
        headers = self.scope["headers"]
        if isinstance(headers, list):
            headers.clear()

    # The send side of the gateway's connection (gateway.outbox.FrameSink): the protocol is
    # the sink itself, so a fan-out's write reaches it without a call in between.

    def write_now(self, data: bytes) -> bool:
        """Write or cork the frame, unless the socket is closing, the transport's buffer is
        over its high-water mark, or this tick's cork is full (False: queue it).

        A frame is corked unless it is the socket's first of a tick on a loop that is not busy.
        """
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
            self._raw_transport.write(data)
        return True

    def uncork(self) -> None:
        corked = self._corked
        if corked is not None:
            self._corked = None
            if not self._raw_transport.is_closing():
                self._raw_transport.write(corked)

    async def send_text(self, payload: str) -> None:
        await self.writable.wait()
        if self.gone:
            raise ClientGone
        frame = encode_text_frame(payload)
        if not self.write_now(frame):  # this tick's cork is full: it goes first
            self.uncork()
            self.write_now(frame)

    async def close(self, code: int, reason: str) -> None:
        self.close_now(code, reason)

    def abort(self) -> bool:
        self.transport.abort()
        return True

    @property
    def gone(self) -> bool:
        return self.disconnected or self.close_sent or self._raw_transport.is_closing()

    def handle_close(self, event: Any) -> None:
        """uvicorn answers a client's close frame at once and only then tells the app, which
        then releases the client's id: a client reconnecting as soon as its close completed
        was refused as still connected. Here the app is told first and the answer (which the
        websockets state machine already composed) waits for :meth:`send_close_reply`."""
        if not self.hold_close_reply or self.close_sent or self.transport.is_closing():
            super().handle_close(event)
            self._abort_later()
            return
        close = self.conn.close_rcvd
        assert close is not None
        self.queue.put_nowait(
            {"type": "websocket.disconnect", "code": close.code, "reason": close.reason}
        )
        self.close_sent = True
        self._close_reply = self.loop.call_later(CLOSE_REPLY_HOLD, self.send_close_reply)

    def send_close_reply(self) -> None:
        """Answer the client's held close frame, if any, and close the connection."""
        timer, self._close_reply = self._close_reply, None
        if timer is None:
            return
        timer.cancel()
        if not self._raw_transport.is_closing():
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()
            self._abort_later()

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
