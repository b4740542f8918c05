"""One connection's chat logic: identity, rooms, validation, rate limit, resume. No sockets.

The transport feeds it client frames; it answers through its :class:`~gateway.outbox.Outbox`
and asks its :class:`Rooms` (the hub) to join, leave and publish. Its collaborators come in one
:class:`SessionServices` built by the composition root (:mod:`gateway.node`), so every rule
here can be tested with a fake sink and the memory broker, and this module imports no hub.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway import disconnect, metrics
from gateway.auth import Authenticator, Expiry, Identity, renewed
from gateway.broker import Broker, BrokerUnavailable, Envelope, room_channel
from gateway.cursor import RoomCursor
from gateway.disconnect import Disconnect
from gateway.hooks import MESSAGE, Hooks
from gateway.outbox import Outbox, OutFrame
from gateway.presence import Presence
from gateway.protocol import (
    DEFAULT_ROOM,
    Codec,
    ErrorCode,
    Join,
    Leave,
    Ping,
    ProtocolError,
    Refresh,
    Resume,
    SendDirect,
    SendMessage,
    WireFormat,
    error_event,
)
from gateway.ratelimit import CommandBudget, MovingWindowLimiter
from gateway.settings import RateLimit

log = logging.getLogger("gateway.session")
NOT_SENT = "message not sent: broker unavailable, retry"
LIMITED_COMMANDS = (Join, Leave, Resume, Ping, Refresh)
"""What ``GATEWAY_COMMAND_RATE_LIMIT`` counts: the commands chat's own rate limit does not."""


class Rooms(Protocol):
    """What a session asks of the hub (:class:`gateway.hub.Hub`)."""

    async def join(self, session: Session, room: str, *, hold: bool = False) -> bool: ...

    async def leave(self, session: Session, room: str) -> None: ...

    async def publish_message(
        self, room: str, sender: str, text: str, source: str | None = None
    ) -> Envelope: ...

    async def publish_direct(self, sender: str, to: str, text: str) -> None: ...


@dataclass(frozen=True, slots=True)
class SessionServices:
    """What every session of a node shares, built once by :class:`gateway.node.Node`."""

    rooms: Rooms
    codec: Codec
    broker: Broker
    """For history on resume."""
    presence: Presence
    """For whether a direct message's recipient is online."""
    message_limit: MovingWindowLimiter
    command_rate: RateLimit
    strikes: int
    """``GATEWAY_RATE_LIMIT_STRIKES``."""
    authenticator: Authenticator | None = None
    """Verifies ``refresh`` tokens (None: auth is off)."""
    auth_leeway: float = 0.0
    hooks: Hooks | None = None
    """Asks the app backend about each chat message (``message`` hook)."""


class Session:
    __slots__ = (
        "closing",
        "commands",
        "connection_id",
        "current_room",
        "expiry",
        "last_activity",
        "may_join",
        "outbox",
        "rooms",
        "services",
        "strikes",
        "token_grants",
        "user",
        "wire",
    )

    def __init__(
        self,
        services: SessionServices,
        user: str,
        connection_id: str,
        wire: WireFormat,
        outbox: Outbox,
    ) -> None:
        self.services = services
        self.user = user
        self.connection_id = connection_id
        self.wire = wire
        self.outbox = outbox
        self.rooms: dict[str, RoomCursor] = {}
        self.current_room = DEFAULT_ROOM
        self.last_activity = time.monotonic()
        self.strikes = 0
        rate = services.command_rate
        self.commands = CommandBudget(rate, self.last_activity) if rate.enabled else None
        """Joins, leaves, resumes and pings this connection may still send (None: no limit)."""
        self.closing: Disconnect | None = None
        self.may_join: Callable[[str], bool] = lambda room: True
        """The rooms the identity's token grants (see :mod:`gateway.auth`)."""
        self.token_grants = False
        """Whether ``may_join`` comes from the token (a refresh then replaces it), not from
        the app backend's ``connect`` answer."""
        self.expiry = Expiry(services.auth_leeway)
        outbox.on_overflow = self._slow_consumer

    def __repr__(self) -> str:
        return f"<Session {self.connection_id} user={self.user!r}>"

    # Membership, as the hub decides it

    def enter(self, room: str) -> RoomCursor:
        """A new cursor for ``room``, which becomes the current room (where plain text goes)."""
        cursor = self.rooms[room] = RoomCursor()
        self.current_room = room
        return cursor

    def exit(self, room: str) -> bool:
        """Forget ``room``; False if the session was not in it."""
        if self.rooms.pop(room, None) is None:
            return False
        if self.current_room == room:
            self.current_room = next(iter(self.rooms), DEFAULT_ROOM)
        return True

    def leave_for_drain(self) -> bool:
        """Mark the session as leaving with the drain; False if it was already closing."""
        if self.closing is not None:
            return False
        self.closing = disconnect.DRAIN
        return True

    # Inbound

    async def on_text(self, frame: str) -> None:
        now = self.last_activity = time.monotonic()
        command = self.services.codec.parse(frame, self.wire)
        if isinstance(command, LIMITED_COMMANDS) and not self._command_allowed(now):
            return
        if isinstance(command, ProtocolError):
            self.reject(command)
        elif isinstance(command, SendMessage):
            await self._chat(command)
        elif isinstance(command, SendDirect):
            await self._direct(command)
        elif isinstance(command, Join):
            await self.services.rooms.join(self, command.room)
        elif isinstance(command, Leave):
            await self._leave(command.room)
        elif isinstance(command, Resume):
            await self.resume(command.room, command.after)
        elif isinstance(command, Ping):
            self.send({"type": "pong"})
        elif isinstance(command, Refresh):
            self._refresh(command.token)

    def on_binary(self) -> None:
        self.last_activity = time.monotonic()
        self.reject(ProtocolError(ErrorCode.INVALID, "binary frames are not accepted"))

    async def _chat(self, command: SendMessage) -> None:
        room = command.room or self.current_room
        if not self._is_member(room) or not await self._within_rate():
            return
        text = await self._vetted(room, command.text)
        if text is None:
            return
        try:
            await self.services.rooms.publish_message(room, self.user, text)
        except BrokerUnavailable:
            self.send_error(ErrorCode.UNAVAILABLE, NOT_SENT)

    async def _vetted(self, room: str, text: str) -> str | None:
        """The text to publish as the app backend's ``message`` hook decides; None: refused."""
        hooks = self.services.hooks
        if hooks is None or not hooks.asks(MESSAGE):
            return text
        decision = await hooks.decide(MESSAGE, {"user": self.user, "room": room, "text": text})
        if isinstance(decision, ProtocolError):
            self.reject(decision)
            return None
        return decision.text if decision.text is not None else text

    def _refresh(self, token: str) -> None:
        """A new token for the same user moves the expiry; otherwise the old one stands."""
        identity = renewed(self.services.authenticator, self.user, token)
        if isinstance(identity, ProtocolError):
            self.reject(identity)
            return
        self.arm_expiry(identity)
        if self.token_grants:
            self.may_join = identity.may_join
        self.send({"type": "refreshed", "exp": int(identity.expires_at)})

    def arm_expiry(self, identity: Identity) -> None:
        """Close with 1008 when ``identity``'s token runs out (replacing any earlier timer)."""
        self.expiry.arm(identity, lambda: self.close(disconnect.TOKEN_EXPIRED))

    async def _direct(self, command: SendDirect) -> None:
        if not await self._within_rate():
            return
        try:
            if await self.services.presence.connections_of(command.to) == 0:
                self.send_error(ErrorCode.INVALID, f"user {command.to!r} is not online")
                return
            await self.services.rooms.publish_direct(self.user, command.to, command.text)
        except BrokerUnavailable:
            self.send_error(ErrorCode.UNAVAILABLE, NOT_SENT)

    async def _within_rate(self) -> bool:
        return self._strike_unless(await self.services.message_limit.allow(self.user))

    def _command_allowed(self, now: float) -> bool:
        return self.commands is None or self._strike_unless(self.commands.allow(now))

    def _strike_unless(self, allowed: bool) -> bool:
        """Both limits share the strikes: a client that keeps going over either is closed."""
        if allowed:
            self.strikes = 0
            return True
        self.reject(ProtocolError(ErrorCode.RATE_LIMITED, "Rate limit exceeded. Slow down."))
        self.strikes += 1
        if self.strikes >= self.services.strikes:
            self.close(disconnect.ABUSE)
        return False

    def _is_member(self, room: str) -> bool:
        if room in self.rooms:
            return True
        self.send_error(ErrorCode.UNKNOWN_ROOM, f"not a member of room {room!r}")
        return False

    async def _leave(self, room: str) -> None:
        if not self._is_member(room):
            return
        await self.services.rooms.leave(self, room)
        self.send({"type": "left", "room": room})

    async def resume(self, room: str, after: int) -> None:
        """Replay history after ``after``, then live messages held meanwhile: no gap, no twin.

        Into a room not joined yet it joins first, still holding live messages, so the order is
        ``joined``, the replay, ``resumed``, then live. In a joined room it replays only what
        this connection was not offered yet.
        """
        if room not in self.rooms and not await self.services.rooms.join(self, room, hold=True):
            return
        cursor = self.rooms[room]
        if cursor.held is None:
            cursor.held = []
        try:
            history = await self.services.broker.history(room_channel(room), after)
        except BrokerUnavailable:
            self.send_error(ErrorCode.UNAVAILABLE, "history unavailable, retry resume")
            self.release_held(cursor)
            return
        after = max(after, 0)
        replayed = cursor.replay(history.messages, self.outbox)
        cursor.floor = min(cursor.floor, after)
        cursor.last_seq = max(cursor.last_seq, after)
        self.send(
            {"type": "resumed", "room": room, "recovered": history.complete, "count": replayed}
        )
        self.release_held(cursor)  # live from here: after the ack, as the SPEC orders them

    def release_held(self, cursor: RoomCursor) -> int:
        """Stop holding; offer the held frames newer than the cursor, returns how many."""
        return cursor.release(self.outbox)

    # Outbound

    def deliver(self, frame: OutFrame, room: str | None) -> bool:
        """Called by the hub's fan-out for every local recipient; never awaits. True when the
        frame was written at once: the hub counts those once per broadcast."""
        cursor = self.rooms.get(room) if room is not None else None
        if cursor is None or not frame.seq:
            return self.outbox.put(frame)
        if cursor.held is not None:
            if len(cursor.held) >= self.outbox.limit:
                self._slow_consumer()  # held frames count against the send queue
                return False
            cursor.held.append(frame)
            return False
        if frame.seq <= cursor.last_seq:
            return False
        cursor.last_seq = frame.seq
        return self.outbox.put(frame)

    def send(self, event: dict[str, Any]) -> None:
        self.outbox.offer(OutFrame(event))

    def send_error(self, code: ErrorCode, detail: str) -> None:
        self.send(error_event(ProtocolError(code, detail)))

    def reject(self, error: ProtocolError) -> None:
        log.debug("message rejected", extra={"code": error.code.value})
        if error.code.value in metrics.REJECT_REASONS:
            metrics.MESSAGES_REJECTED.labels(error.code.value).inc()
        self.send(error_event(error))

    def close(self, reason: Disconnect, *, flush: bool = True) -> None:
        if self.closing is None:
            self.closing = reason
            self.outbox.close(reason, flush=flush)

    def _slow_consumer(self) -> None:
        self.close(disconnect.SLOW_CONSUMER, flush=False)
