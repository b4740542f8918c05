"""Rooms and local fan-out: which sessions of this worker hear which channel.

The broker carries publications between workers; the hub subscribes a channel while this
worker has a member in it, and fans each delivery out to the local members with one encoding
of the event (see :class:`~gateway.outbox.OutFrame`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind

from gateway import disconnect, metrics
from gateway.broker import BrokerUnavailable, Envelope, create_broker, room_channel, user_channel
from gateway.disconnect import Disconnect
from gateway.outbox import OutFrame
from gateway.presence import USER_ROOM, create_presence
from gateway.protocol import DEFAULT_ROOM, Codec, ErrorCode, ProtocolError
from gateway.ratelimit import MessageRateLimiter
from gateway.session import RoomCursor, Session
from gateway.settings import Settings

log = logging.getLogger("gateway.hub")
tracer = trace.get_tracer("gateway")
ROOM_PREFIX = "room:"


class Hub:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.codec = Codec(settings.max_message_bytes)
        self.broker = create_broker(settings.broker_url, self.deliver, settings.history_size)
        self.presence = create_presence(settings.broker_url)
        self.limiter = MessageRateLimiter(settings.rate_limit)
        self.sessions: set[Session] = set()
        self._members: dict[str, set[Session]] = {}
        self._users: dict[str, set[Session]] = {}
        self._anonymous_ids = itertools.count(1)
        self._connection_ids = itertools.count(1)
        self._reaper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.broker.start()
        await self.presence.start()
        if self.settings.idle_timeout > 0:
            self._reaper = asyncio.create_task(self._reap_idle(), name="gateway-idle-reaper")

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await self.presence.aclose()
        await self.broker.aclose()

    @property
    def ready(self) -> bool:
        return self.broker.ready

    @staticmethod
    def room_channel(room: str) -> str:
        return room_channel(room)

    def anonymous_user(self) -> str:
        return f"anonymous-{next(self._anonymous_ids)}"

    def connection_id(self) -> str:
        return f"{id(self):x}-{next(self._connection_ids)}"

    # Membership

    async def attach(self, session: Session, *, allow_duplicate: bool) -> Disconnect | None:
        """Register a new connection and put it in the lobby, or say why it may not stay."""
        local = self._users.setdefault(session.user, set())
        if not allow_duplicate and (local or await self.presence.connections_of(session.user) > 0):
            if not local:
                del self._users[session.user]
            return disconnect.DUPLICATE
        local.add(session)
        self.sessions.add(session)
        metrics.CONNECTIONS.inc()
        try:
            await self.presence.add(USER_ROOM, session.user, session.connection_id)
            await self._subscribe(user_channel(session.user), session)
            await self.join(session, DEFAULT_ROOM)
        except BrokerUnavailable:
            return disconnect.SERVER_ERROR
        return None

    async def detach(self, session: Session) -> None:
        """Undo :meth:`attach`; safe to call for a half-attached session."""
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        metrics.CONNECTIONS.dec()
        for room in list(session.rooms):
            with contextlib.suppress(BrokerUnavailable):
                await self.leave(session, room)
        with contextlib.suppress(BrokerUnavailable):
            await self._unsubscribe(user_channel(session.user), session)
        await self.presence.remove(USER_ROOM, session.user, session.connection_id)
        local = self._users.get(session.user)
        if local is not None:
            local.discard(session)
            if not local:
                del self._users[session.user]

    async def join(self, session: Session, room: str) -> bool:
        if room in session.rooms:
            await self._acknowledge_join(session, room)
            return True
        if len(session.rooms) >= self.settings.max_rooms_per_connection:
            limit = self.settings.max_rooms_per_connection
            session.reject(ProtocolError(ErrorCode.FORBIDDEN, f"at most {limit} rooms at once"))
            return False
        session.rooms[room] = RoomCursor()
        session.current_room = room
        await self._subscribe(room_channel(room), session)
        await self.presence.add(room, session.user, session.connection_id)
        online = await self._acknowledge_join(session, room)
        await self._publish_presence(room, "joined", session.user, len(online))
        return True

    async def leave(self, session: Session, room: str) -> None:
        if session.rooms.pop(room, None) is None:
            return
        if session.current_room == room:
            session.current_room = next(iter(session.rooms), DEFAULT_ROOM)
        await self._unsubscribe(room_channel(room), session)
        await self.presence.remove(room, session.user, session.connection_id)
        online = await self.presence.online(room)
        await self._publish_presence(room, "left", session.user, len(online))

    async def _acknowledge_join(self, session: Session, room: str) -> list[str]:
        online = await self.presence.online(room)
        session.send({"type": "joined", "room": room, "online": online})
        return online

    async def _subscribe(self, channel: str, session: Session) -> None:
        members = self._members.setdefault(channel, set())
        members.add(session)
        if len(members) == 1:
            await self.broker.subscribe(channel)

    async def _unsubscribe(self, channel: str, session: Session) -> None:
        members = self._members.get(channel)
        if members is None:
            return
        members.discard(session)
        if not members:
            del self._members[channel]
            await self.broker.unsubscribe(channel)

    async def _publish_presence(self, room: str, event: str, user: str, online: int) -> None:
        payload = {"type": "presence", "room": room, "event": event, "user": user, "online": online}
        await self.broker.publish(self._envelope(room_channel(room), payload), keep=False)

    # Publications

    async def publish_message(self, room: str, sender: str, text: str) -> Envelope:
        """Assign the next id in ``room`` and fan out; raises BrokerUnavailable, sending nothing."""
        event = {"type": "message", "id": "", "room": room, "from": sender, "text": text}
        envelope = await self.broker.publish(self._envelope(room_channel(room), event), keep=True)
        metrics.MESSAGES_RECEIVED.inc()
        return envelope

    async def publish_direct(self, sender: str, to: str, text: str) -> None:
        """Deliver to every connection of ``to`` and echo to the sender's other connections."""
        event = {"type": "direct", "from": sender, "to": to, "text": text}
        for user in dict.fromkeys((to, sender)):
            await self.broker.publish(self._envelope(user_channel(user), dict(event)), keep=False)
        metrics.MESSAGES_RECEIVED.inc()

    def _envelope(self, channel: str, event: dict[str, Any]) -> Envelope:
        accepted_at = time.time()
        event["ts"] = accepted_at
        return Envelope(channel, event, accepted_at)

    def deliver(self, envelope: Envelope) -> None:
        """The broker's callback: fan one publication out to this worker's members. Never awaits."""
        members = self._members.get(envelope.channel)
        if not members:
            return
        channel = envelope.channel
        room = channel[len(ROOM_PREFIX) :] if channel.startswith(ROOM_PREFIX) else None
        frame = OutFrame(envelope.event, channel, envelope.seq)
        with tracer.start_as_current_span(
            "broadcast",
            context=extract(envelope.trace) if envelope.trace else None,
            kind=SpanKind.CONSUMER,
        ) as span:
            started = time.perf_counter()
            written = 0
            for session in list(members):
                written += session.deliver(frame, room)
            elapsed = time.perf_counter() - started
            if span.is_recording():
                span.set_attribute("messaging.destination.name", room or channel)
                span.set_attribute("gateway.recipients", len(members))
                if envelope.seq:
                    span.set_attribute("messaging.message.id", str(envelope.seq))
        metrics.MESSAGES_DELIVERED.inc(written)
        metrics.BROADCAST_DURATION.observe(elapsed)
        metrics.BROADCAST_RECIPIENTS.observe(len(members))
        metrics.DELIVERY_LATENCY.observe(max(time.time() - envelope.accepted_at, 0.0))

    # Idle connections

    async def _reap_idle(self) -> None:
        """One timer for every connection rather than one per connection."""
        limit = self.settings.idle_timeout
        period = min(1.0, limit / 4)
        while True:
            await asyncio.sleep(period)
            deadline = time.monotonic() - limit
            for session in list(self.sessions):
                if session.last_activity < deadline:
                    session.close(disconnect.IDLE_TIMEOUT)
