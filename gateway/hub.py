"""Rooms and local fan-out: which sessions of this worker hear which channel.

The broker carries publications between workers; the hub subscribes a channel while this
worker has a member in it, and fans each delivery out to the local members with one encoding
of the event (see :class:`~gateway.outbox.OutFrame`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from gateway import disconnect, metrics, tracing
from gateway.broker import Broker, BrokerUnavailable, Envelope, room_channel, room_of, user_channel
from gateway.cursor import RoomCursor
from gateway.disconnect import Disconnect
from gateway.hooks import JOIN, Hooks
from gateway.identity import skeletons
from gateway.outbox import OutFrame, count_delivered
from gateway.presence import USER_ROOM, Headcount, Presence
from gateway.presence_batch import COUNTED_AT, Batch, PresenceBatcher
from gateway.protocol import DEFAULT_ROOM, ErrorCode, ProtocolError
from gateway.session import Session
from gateway.settings import Settings

log = logging.getLogger("gateway.hub")


class Hub:
    """Membership (attach, join, leave, detach), publishing, local fan-out and the idle reaper
    of one worker. Implements :class:`gateway.session.Rooms` for its sessions."""

    def __init__(
        self, settings: Settings, broker: Broker, presence: Presence, hooks: Hooks | None = None
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.presence = presence
        self.hooks = hooks
        """Asks the app backend's ``join`` hook (never for the lobby a connection starts in)."""
        self.sessions: set[Session] = set()
        self._members: dict[str, set[Session]] = {}
        self._users: dict[str, set[Session]] = {}
        self._claims: dict[Session, tuple[str, ...]] = {}
        """The id keys each session with an unshared id claimed (:mod:`gateway.identity`)."""
        self._subscribing: dict[str, asyncio.Future[None]] = {}
        self._reaper: asyncio.Task[None] | None = None
        self.presence_batches = PresenceBatcher(
            settings.presence_batch_ms / 1000, settings.presence_names_max, self._fan_out
        )

    def start(self) -> None:
        if self.settings.idle_timeout > 0:
            self._reaper = asyncio.create_task(self._reap_idle(), name="gateway-idle-reaper")

    async def aclose(self) -> None:
        self.presence_batches.aclose()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper

    def stop_delivery(self, session: Session) -> bool:
        """Mark the session as leaving (a drain) and take it out of the fan-out at once.

        What is queued for it is all it gets from here on; its client resumes the rest from
        history. Sessions drained together then never see each other's ``left`` events, and
        the read loop ignores what the client sends. False if it was already closing.
        """
        if not session.leave_for_drain():
            return False
        for channel in (*map(room_channel, session.rooms), user_channel(session.user)):
            members = self._members.get(channel)
            if members is not None:
                members.discard(session)
        return True

    async def send_away(self, session: Session) -> None:
        """Detach a session stopped by :meth:`stop_delivery`, tell the client when to come
        back, then close with 1012 once its queue is flushed.

        Detaching first means its presence is gone (and ``left`` published) before the client
        can see the close: a client that comes back within a millisecond is not refused as
        still connected. ``after_ms`` is drawn over the drain jitter window, so a worker's
        clients do not all come back in the same second.
        """
        try:
            await self.detach(session)
        finally:
            after_ms = round(random.uniform(0.0, self.settings.drain_jitter) * 1000)
            session.send({"type": "reconnect", "after_ms": after_ms})
            session.outbox.close(disconnect.DRAIN, flush=True)

    # Membership

    async def attach(
        self, session: Session, *, allow_duplicate: bool, per_user_limit: int = 0
    ) -> Disconnect | None:
        """Register a new connection and put it in the lobby, or say why it may not stay.

        An unshared id (``allow_duplicate`` false) is claimed on its skeletons, atomically over
        the fleet (see :meth:`Presence.claim`): two look-alike ids never both connect.
        ``per_user_limit`` (0 = none) caps the user's connections over all workers. The awaits
        (presence, shared by the workers) come before the local checks, so those and the
        registration run without a suspension between them: exact within this worker.
        While the broker is known to be down it fails at once: every step needs Redis, and a
        hung one would make each of them wait out its timeout.
        """
        if not self.broker.ready:
            return disconnect.SERVER_ERROR
        elsewhere = 0
        try:
            if per_user_limit:
                elsewhere = await self.presence.connections_of(session.user)
            if not allow_duplicate:
                keys = skeletons(session.user)
                if not await self.presence.claim(keys, session.connection_id):
                    return disconnect.DUPLICATE
                self._claims[session] = keys
        except BrokerUnavailable:
            return disconnect.SERVER_ERROR
        here = len(self._users.get(session.user, ()))
        if per_user_limit and max(here, elsewhere) >= per_user_limit:
            return disconnect.CONNECTION_LIMIT
        if 0 < self.settings.max_connections <= len(self.sessions):
            return disconnect.CONNECTION_LIMIT
        self._users.setdefault(session.user, set()).add(session)
        self.sessions.add(session)
        metrics.CONNECTIONS.inc()
        return await self._settle_in(session)

    async def _settle_in(self, session: Session) -> Disconnect | None:
        """The user's presence, its direct channel and the lobby, at once: independent round
        trips, so a handshake (and a reconnect storm) waits for the longest, not their sum."""
        failed: Disconnect | None = None
        try:
            async with asyncio.TaskGroup() as steps:
                steps.create_task(self.presence.add(USER_ROOM, session.user, session.connection_id))
                steps.create_task(self._subscribe(user_channel(session.user), session))
                steps.create_task(self.join(session, DEFAULT_ROOM, ask=False))
        except* BrokerUnavailable:
            failed = disconnect.SERVER_ERROR
        return failed

    async def detach(self, session: Session, released: Callable[[], None] | None = None) -> None:
        """Undo :meth:`attach`; safe to call for a half-attached session.

        The id goes first (its claim, its connection count): ``released`` is then called,
        before the rooms are left, so the transport can let the client see its close complete
        only once the same id may connect again.
        """
        try:
            await self._release_identity(session)
        finally:
            if released is not None:
                released()
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        metrics.CONNECTIONS.dec()
        for room in list(session.rooms):
            with contextlib.suppress(BrokerUnavailable):
                await self.leave(session, room)
        with contextlib.suppress(BrokerUnavailable):
            await self._unsubscribe(user_channel(session.user), session)

    def sessions_of(self, user: str) -> list[Session]:
        """This worker's connections of ``user``."""
        return list(self._users.get(user, ()))

    async def _release_identity(self, session: Session) -> None:
        keys = self._claims.pop(session, None)
        if keys is not None:
            await self.presence.release(keys, session.connection_id)
        local = self._users.get(session.user)
        if local is None or session not in local:
            return
        local.discard(session)
        if not local:
            del self._users[session.user]
        await self.presence.remove(USER_ROOM, session.user, session.connection_id)

    async def join(
        self, session: Session, room: str, *, hold: bool = False, ask: bool = True
    ) -> bool:
        """Subscribe, then ``joined`` (with the room's ``last_id``) before any of its messages.

        The new cursor holds live messages from before the subscription; once the broker has
        confirmed it, the room's newest id splits what comes live (newer) from what is in
        history (up to it), the ack goes out, and the held messages newer than it follow.
        ``hold`` keeps holding them for a resume that replays history first. ``ask``: the app
        backend's ``join`` hook decides too (after the grants and the room limit). The presence
        entry, then the ack's count and names, are written and read after the newest id is read,
        just before the ack and the ``joined`` event: run at once, the count went stale
        behind other joins before it was published (a storm's last event said 22 of 41), and a
        join in one process stopped being one step.
        """
        cursor = session.rooms.get(room)
        if cursor is not None:
            self._acknowledge_join(session, room, cursor, await self._presence_of(session, room))
            return True
        if not session.may_join(room):
            session.reject(ProtocolError(ErrorCode.FORBIDDEN, f"not allowed in room {room!r}"))
            return False
        if len(session.rooms) >= self.settings.max_rooms_per_connection:
            limit = self.settings.max_rooms_per_connection
            session.reject(ProtocolError(ErrorCode.FORBIDDEN, f"at most {limit} rooms at once"))
            return False
        if ask and self.hooks is not None and self.hooks.asks(JOIN):
            decision = await self.hooks.decide(JOIN, {"user": session.user, "room": room})
            if isinstance(decision, ProtocolError):
                session.reject(decision)
                return False
        cursor = session.enter(room)
        cursor.presence_mark = self.presence_batches.mark(room_channel(room))
        await self._subscribe(room_channel(room), session)
        last_id = await self.broker.last_id(room_channel(room))
        seen = await self._presence_of(session, room, enter=True)
        if session.rooms.get(room) is not cursor:
            return False  # left, or closed, meanwhile: its leave has been told
        cursor.start(last_id)
        count = self._acknowledge_join(session, room, cursor, seen)
        if not hold:
            session.release_held(cursor)
        if count is not None:
            with contextlib.suppress(BrokerUnavailable):
                await self._publish_presence(room, "joined", session.user, count)
        return True

    async def leave(self, session: Session, room: str) -> None:
        if not session.exit(room):
            return
        await self._unsubscribe(room_channel(room), session)
        with contextlib.suppress(BrokerUnavailable):
            count = await self.presence.leave(room, session.user, session.connection_id)
            await self._publish_presence(room, "left", session.user, count)

    async def _presence_of(
        self, session: Session, room: str, *, enter: bool = False
    ) -> tuple[Headcount, list[str]] | None:
        """The room's count and first ``GATEWAY_PRESENCE_NAMES_MAX`` names (after adding the
        session when it ``enter``s); ``None`` while presence is unreachable (the entry stands:
        the next refresh writes it)."""
        limit = self.settings.presence_names_max
        try:
            if enter:
                return await self.presence.join(room, session.user, session.connection_id, limit)
            return await self.presence.snapshot(room, limit)
        except BrokerUnavailable:
            return None

    def _acknowledge_join(
        self,
        session: Session,
        room: str,
        cursor: RoomCursor,
        seen: tuple[Headcount, list[str]] | None,
    ) -> Headcount | None:
        """The ``joined`` ack with ``last_id`` and what :meth:`_presence_of` saw; returns the
        count. Without it, an error, then the ack without the count and names (``None``): the
        membership stands, only the list is missing."""
        ack: dict[str, Any] = {"type": "joined", "room": room}
        if seen is None:
            session.send_error(ErrorCode.UNAVAILABLE, f"in room {room!r}; presence unavailable")
        else:
            ack["online"], ack["count"] = seen[1], int(seen[0])
        ack["last_id"] = str(cursor.since)
        session.send(ack)
        if seen is None:
            return None
        self.presence_batches.counted(room_channel(room), seen[0])
        return seen[0]

    async def _subscribe(self, channel: str, session: Session) -> None:
        """Returns once the broker hears the channel, also for a member that joins while the
        first one's subscription is still being confirmed (its ``last_id`` read must follow)."""
        members = self._members.setdefault(channel, set())
        members.add(session)
        if len(members) > 1:
            pending = self._subscribing.get(channel)
            if pending is not None:
                await asyncio.shield(pending)
            return
        done = self._subscribing[channel] = asyncio.get_running_loop().create_future()
        try:
            await self.broker.subscribe(channel)
        finally:
            if self._subscribing.get(channel) is done:
                del self._subscribing[channel]
            done.set_result(None)

    async def _unsubscribe(self, channel: str, session: Session) -> None:
        members = self._members.get(channel)
        if members is None:
            return
        members.discard(session)
        if not members:
            del self._members[channel]
            self.presence_batches.forget(channel)
            await self.broker.unsubscribe(channel)

    async def _publish_presence(self, room: str, event: str, user: str, online: Headcount) -> None:
        payload: dict[str, Any] = {
            "type": "presence",
            "room": room,
            "event": event,
            "user": user,
            "online": int(online),  # a plain int for every encoder
        }
        if online.counted_at:
            payload[COUNTED_AT] = online.counted_at
        await tracing.publish(self.broker, self._envelope(room_channel(room), payload), keep=False)

    # Publications

    async def publish_message(
        self, room: str, sender: str, text: str, source: str | None = None
    ) -> Envelope:
        """Assign the next id in ``room`` and fan out; raises BrokerUnavailable, sending nothing.
        ``source`` (``"api"``) tells clients a message did not come from a user's connection."""
        event = {"type": "message", "id": "", "room": room, "from": sender, "text": text}
        if source is not None:
            event["source"] = source
        envelope = await tracing.publish(
            self.broker, self._envelope(room_channel(room), event), keep=True
        )
        metrics.MESSAGES_RECEIVED.inc()
        return envelope

    async def publish_direct(self, sender: str, to: str, text: str) -> None:
        """Deliver to every connection of ``to`` and echo to the sender's other connections."""
        event = {"type": "direct", "from": sender, "to": to, "text": text}
        for user in dict.fromkeys((to, sender)):
            envelope = self._envelope(user_channel(user), dict(event))
            await tracing.publish(self.broker, envelope, keep=False)
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
        if envelope.event["type"] == "presence":
            # Traced like any broadcast: the publisher's trace shows every worker that took
            # the change, even though its members hear it with the room's window.
            with tracing.broadcast_span(self.broker, envelope, len(members)):
                self.presence_batches.add(channel, envelope.event)
            return
        room = room_of(channel)
        frame = OutFrame(envelope.event, channel, envelope.seq)
        written = 0
        with tracing.broadcast_span(self.broker, envelope, len(members)):
            started = time.perf_counter()
            for session in list(members):
                written += session.deliver(frame, room)
            elapsed = time.perf_counter() - started
        count_delivered(written)
        metrics.BROADCAST_DURATION.observe(elapsed)
        metrics.BROADCAST_RECIPIENTS.observe(len(members))
        metrics.DELIVERY_LATENCY.observe(max(time.time() - envelope.accepted_at, 0.0))

    def _fan_out(self, channel: str, batch: Batch) -> None:
        """A window's presence to this worker's members of the room: one event each, encoded
        once for all who were there before the window, apart for those who joined during it."""
        members = self._members.get(channel)
        room = room_of(channel)
        if not members or room is None:
            return
        frames: dict[int, OutFrame | None] = {}
        written = 0
        for session in list(members):
            cursor = session.rooms.get(room)
            after = max(cursor.presence_mark if cursor else 0, batch.first - 1)
            if after not in frames:
                event = self.presence_batches.event(batch, after)
                frames[after] = None if event is None else OutFrame(event, channel)
            frame = frames[after]
            if frame is not None:
                written += session.deliver(frame, room)
        count_delivered(written)
        metrics.BROADCAST_RECIPIENTS.observe(len(members))

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
