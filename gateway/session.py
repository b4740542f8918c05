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
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway import disconnect, metrics
from gateway.broker import Broker, BrokerUnavailable, Envelope, room_channel
from gateway.disconnect import Disconnect
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
LIMITED_COMMANDS = (Join, Leave, Resume, Ping)
"""What ``GATEWAY_COMMAND_RATE_LIMIT`` counts: the commands chat's own rate limit does not."""


@dataclass(slots=True)
class RoomCursor:
    """Where this connection stands in a room's id sequence, so nothing is shown twice or missed.

    Every id in ``(floor, last_seq]`` has been offered to the connection (live or replayed): a
    resume replays only what lies outside that range. A new cursor holds live messages back
    from before the subscription until the ``joined`` ack is out (see ``Hub.join``).
    """

    last_seq: int = 0
    floor: int = 0
    since: int = 0
    """The room's newest id when this connection's subscription began: the ack's ``last_id``."""
    presence_mark: int = 0
    """The room's presence change count when this connection subscribed: it hears the later
    ones (see :mod:`gateway.presence_batch`)."""
    held: list[OutFrame] | None = field(default_factory=list)
    """Live messages held back until ``joined`` is sent, and while a resume replays history."""

    def start(self, last_id: int) -> None:
        """The subscription is live from ``last_id`` on: older ids are in history."""
        self.last_seq = self.floor = self.since = last_id


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


class Session:
    __slots__ = (
        "closing",
        "commands",
        "connection_id",
        "current_room",
        "last_activity",
        "may_join",
        "outbox",
        "rooms",
        "services",
        "strikes",
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

    def on_binary(self) -> None:
        self.last_activity = time.monotonic()
        self.reject(ProtocolError(ErrorCode.INVALID, "binary frames are not accepted"))

    async def _chat(self, command: SendMessage) -> None:
        room = command.room or self.current_room
        if not self._is_member(room) or not await self._within_rate():
            return
        try:
            await self.services.rooms.publish_message(room, self.user, command.text)
        except BrokerUnavailable:
            self.send_error(ErrorCode.UNAVAILABLE, NOT_SENT)

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
        replayed = self._replay(cursor, history.messages)
        cursor.floor = min(cursor.floor, after)
        cursor.last_seq = max(cursor.last_seq, after)
        replayed += self.release_held(cursor)
        self.send(
            {"type": "resumed", "room": room, "recovered": history.complete, "count": replayed}
        )

    def _replay(self, cursor: RoomCursor, messages: list[Envelope]) -> int:
        """Offer the kept messages this connection was not offered yet; returns how many."""
        passed = 0
        for envelope in messages:
            seq = envelope.seq
            if cursor.floor < seq <= cursor.last_seq:
                continue
            cursor.last_seq = max(cursor.last_seq, seq)
            passed += 1
            self.outbox.offer(OutFrame(envelope.event, seq=seq))
        return passed

    def release_held(self, cursor: RoomCursor) -> int:
        """Stop holding; offer the held frames newer than the cursor, returns how many."""
        held, cursor.held = cursor.held or [], None
        passed = 0
        for frame in held:
            if frame.seq > cursor.last_seq:
                cursor.last_seq = frame.seq
                passed += 1
                self.outbox.offer(frame)
        return passed

    # Outbound

    def deliver(self, frame: OutFrame, room: str | None) -> None:
        """Called by the hub's fan-out for every local recipient; never awaits."""
        cursor = self.rooms.get(room) if room is not None else None
        if cursor is None or not frame.seq:
            self.outbox.offer(frame)
            return
        if cursor.held is not None:
            if len(cursor.held) >= self.outbox.limit:
                self._slow_consumer()  # held frames count against the send queue
                return
            cursor.held.append(frame)
            return
        if frame.seq <= cursor.last_seq:
            return
        cursor.last_seq = frame.seq
        self.outbox.offer(frame)

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
