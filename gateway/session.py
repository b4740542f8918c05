"""One connection's chat logic: identity, rooms, validation, rate limit, resume. No sockets.

The transport feeds it client frames; it answers through its :class:`~gateway.outbox.Outbox`
and asks the :class:`~gateway.hub.Hub` to join, leave and publish. That split lets every rule
here be tested with a fake sink and the memory broker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway import disconnect, metrics
from gateway.broker import BrokerUnavailable, Envelope, room_channel
from gateway.disconnect import Disconnect
from gateway.outbox import Outbox, OutFrame
from gateway.protocol import (
    DEFAULT_ROOM,
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
from gateway.ratelimit import CommandBudget

if TYPE_CHECKING:
    from gateway.hub import Hub

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
    held: list[OutFrame] | None = field(default_factory=list)
    """Live messages held back until ``joined`` is sent, and while a resume replays history."""

    def start(self, last_id: int) -> None:
        """The subscription is live from ``last_id`` on: older ids are in history."""
        self.last_seq = self.floor = self.since = last_id


class Session:
    __slots__ = (
        "closing",
        "commands",
        "connection_id",
        "current_room",
        "hub",
        "last_activity",
        "may_join",
        "outbox",
        "rooms",
        "strikes",
        "user",
        "wire",
    )

    def __init__(
        self,
        hub: Hub,
        user: str,
        connection_id: str,
        wire: WireFormat,
        outbox: Outbox,
    ) -> None:
        self.hub = hub
        self.user = user
        self.connection_id = connection_id
        self.wire = wire
        self.outbox = outbox
        self.rooms: dict[str, RoomCursor] = {}
        self.current_room = DEFAULT_ROOM
        self.last_activity = time.monotonic()
        self.strikes = 0
        rate = hub.settings.command_rate_limit
        self.commands = CommandBudget(rate, self.last_activity) if rate.enabled else None
        """Joins, leaves, resumes and pings this connection may still send (None: no limit)."""
        self.closing: Disconnect | None = None
        self.may_join: Callable[[str], bool] = lambda room: True
        """The rooms the identity's token grants (see :mod:`gateway.auth`)."""
        outbox.on_overflow = self._slow_consumer

    def __repr__(self) -> str:
        return f"<Session {self.connection_id} user={self.user!r}>"

    # Inbound

    async def on_text(self, frame: str) -> None:
        now = self.last_activity = time.monotonic()
        command = self.hub.codec.parse(frame, self.wire)
        if isinstance(command, LIMITED_COMMANDS) and not self._command_allowed(now):
            return
        if isinstance(command, ProtocolError):
            self.reject(command)
        elif isinstance(command, SendMessage):
            await self._chat(command)
        elif isinstance(command, SendDirect):
            await self._direct(command)
        elif isinstance(command, Join):
            await self.hub.join(self, command.room)
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
            await self.hub.publish_message(room, self.user, command.text)
        except BrokerUnavailable:
            self.send_error(ErrorCode.UNAVAILABLE, NOT_SENT)

    async def _direct(self, command: SendDirect) -> None:
        if not await self._within_rate():
            return
        try:
            if await self.hub.presence.connections_of(command.to) == 0:
                self.send_error(ErrorCode.INVALID, f"user {command.to!r} is not online")
                return
            await self.hub.publish_direct(self.user, command.to, command.text)
        except BrokerUnavailable:
            self.send_error(ErrorCode.UNAVAILABLE, NOT_SENT)

    async def _within_rate(self) -> bool:
        return self._strike_unless(await self.hub.limiter.allow(self.user))

    def _command_allowed(self, now: float) -> bool:
        return self.commands is None or self._strike_unless(self.commands.allow(now))

    def _strike_unless(self, allowed: bool) -> bool:
        """Both limits share the strikes: a client that keeps going over either is closed."""
        if allowed:
            self.strikes = 0
            return True
        self.reject(ProtocolError(ErrorCode.RATE_LIMITED, "Rate limit exceeded. Slow down."))
        self.strikes += 1
        if self.strikes >= self.hub.settings.rate_limit_strikes:
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
        await self.hub.leave(self, room)
        self.send({"type": "left", "room": room})

    async def resume(self, room: str, after: int) -> None:
        """Replay history after ``after``, then live messages held meanwhile: no gap, no twin.

        Into a room not joined yet it joins first, still holding live messages, so the order is
        ``joined``, the replay, ``resumed``, then live. In a joined room it replays only what
        this connection was not offered yet.
        """
        if room not in self.rooms and not await self.hub.join(self, room, hold=True):
            return
        cursor = self.rooms[room]
        if cursor.held is None:
            cursor.held = []
        try:
            history = await self.hub.broker.history(room_channel(room), after)
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
        passed = written = 0
        for envelope in messages:
            seq = envelope.seq
            if cursor.floor < seq <= cursor.last_seq:
                continue
            cursor.last_seq = max(cursor.last_seq, seq)
            passed += 1
            written += self.outbox.offer(OutFrame(envelope.event, seq=seq))
        metrics.MESSAGES_DELIVERED.inc(written)
        return passed

    def release_held(self, cursor: RoomCursor) -> int:
        """Stop holding; offer the held frames newer than the cursor, returns how many."""
        held, cursor.held = cursor.held or [], None
        passed = written = 0
        for frame in held:
            if frame.seq > cursor.last_seq:
                cursor.last_seq = frame.seq
                passed += 1
                written += self.outbox.offer(frame)
        metrics.MESSAGES_DELIVERED.inc(written)
        return passed

    # Outbound

    def deliver(self, frame: OutFrame, room: str | None) -> int:
        """Called by the hub's fan-out for every local recipient; never awaits."""
        cursor = self.rooms.get(room) if room is not None else None
        if cursor is None or not frame.seq:
            return self.outbox.offer(frame)
        if cursor.held is not None:
            if len(cursor.held) >= self.outbox.limit:
                self._slow_consumer()  # held frames count against the send queue
                return 0
            cursor.held.append(frame)
            return 0
        if frame.seq <= cursor.last_seq:
            return 0
        cursor.last_seq = frame.seq
        return self.outbox.offer(frame)

    def send(self, event: dict[str, Any]) -> None:
        metrics.MESSAGES_DELIVERED.inc(self.outbox.offer(OutFrame(event)))

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
