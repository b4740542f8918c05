"""Commands to every worker of the fleet: disconnect a user, take a user out of a room.

The server API's worker publishes a command on the broker's control channel
(:data:`gateway.broker.CONTROL_CHANNEL`), to which every worker subscribes when it starts, and
each worker (itself included) applies it to its own connections of that user.

Delivery is what the broker's fan-out gives: exactly once per live worker with ``memory://``
(one process); at most once with Redis pub/sub — a worker disconnected from Redis at that
moment never hears the command (there is no replay for commands, unlike room messages), and a
connection that opens after the command is not affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from gateway import disconnect
from gateway.broker import CONTROL_CHANNEL, Broker, BrokerUnavailable, Envelope
from gateway.hub import Hub
from gateway.session import Session

log = logging.getLogger("gateway.control")

DISCONNECT = "disconnect"
LEAVE = "leave"


class Control:
    def __init__(self, broker: Broker, hub: Hub) -> None:
        self.broker = broker
        self.hub = hub
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.broker.subscribe(CONTROL_CHANNEL)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def disconnect(self, user: str) -> None:
        """Every connection of ``user`` on every worker closes with 1008; raises
        ``BrokerUnavailable`` when the command could not be sent."""
        await self._send({"op": DISCONNECT, "user": user})

    async def remove(self, room: str, user: str) -> None:
        """Every connection of ``user`` leaves ``room`` (``left`` ack, presence event)."""
        await self._send({"op": LEAVE, "room": room, "user": user})

    async def _send(self, command: dict[str, Any]) -> None:
        await self.broker.publish(Envelope(CONTROL_CHANNEL, command, time.time()), keep=False)

    def apply(self, envelope: Envelope) -> None:
        """The broker's callback for the control channel; never awaits."""
        command = envelope.event
        user = command.get("user")
        if not isinstance(user, str):
            log.warning("malformed control command ignored", extra={"op": command.get("op")})
            return
        sessions = self.hub.sessions_of(user)
        if command.get("op") == DISCONNECT:
            for session in sessions:
                session.close(disconnect.KICKED)
        elif command.get("op") == LEAVE and isinstance(room := command.get("room"), str):
            for session in sessions:
                if room in session.rooms and session.closing is None:
                    task = asyncio.create_task(self._leave(session, room))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        if sessions:
            log.info(
                "control command applied",
                extra={"op": command.get("op"), "connections": len(sessions)},
            )

    async def _leave(self, session: Session, room: str) -> None:
        if room not in session.rooms:
            return
        with contextlib.suppress(BrokerUnavailable):
            await self.hub.leave(session, room)
        session.send({"type": "left", "room": room})
