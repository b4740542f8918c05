"""One client's session logic without sockets: server events in, events for the program and
commands for the server out.

Keeping this free of I/O is what lets the resume and rejoin rules be tested event by event,
and keeps :mod:`gateway.client.client` down to moving frames. The rules are the chat page's:
the server acknowledges the ``lobby`` on every connection (that ack is what "connected" means,
since a socket can open and still be refused at once), the client then joins its other rooms
again, and each room's ``joined`` ack says, through ``last_id``, whether anything was missed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.client.events import (
    Connected,
    Event,
    Joined,
    Left,
    Message,
    Presence,
    Reconnect,
    Resumed,
    ServerEvent,
    Unknown,
)
from gateway.client.rooms import RoomLog

LOBBY = "lobby"
Command = dict[str, str]


@dataclass
class Step:
    """What one server event calls for: commands to send first, then events to hand over."""

    send: list[Command] = field(default_factory=list)
    emit: list[Event] = field(default_factory=list)


class SessionState:
    """The rooms a client wants to be in and what it holds of each, across connections."""

    def __init__(self, user: str, rooms: Iterable[str] = (), backfill: bool = True) -> None:
        self.user = user
        self.backfill = backfill
        self.rooms: dict[str, RoomLog] = {LOBBY: RoomLog(LOBBY)}
        for room in rooms:
            self.rooms.setdefault(room, RoomLog(room))
        self.established = False
        """This connection's session is up: the server acknowledged the lobby."""
        self.was_connected = False
        """Some connection's session was up (a refusal then may be the server's stale view)."""
        self.hint_ms: int | None = None
        """``after_ms`` of the server's ``reconnect`` message, for the close that follows."""
        self.leaving: set[str] = set()
        """Rooms left on this connection whose ``left`` ack has not come yet."""

    def opened(self) -> None:
        """A new socket: nothing acknowledged on it yet."""
        self.established = False
        self.hint_ms = None
        self.leaving.clear()

    def closed(self) -> None:
        self.established = False

    def join(self, room: str) -> list[Command]:
        """Want ``room``; the command to send now (none while offline: the next connection
        joins it)."""
        if room in self.rooms:
            return []
        self.rooms[room] = RoomLog(room)
        return [{"type": "join", "room": room}] if self.established else []

    def leave(self, room: str) -> list[Command]:
        """Stop wanting ``room`` and forget what is held of it."""
        if self.rooms.pop(room, None) is None or not self.established:
            return []
        self.leaving.add(room)
        return [{"type": "leave", "room": room}]

    def on_event(self, event: ServerEvent | Unknown) -> Step:
        """What ``event`` calls for. Events of rooms the client is not in are dropped: they
        can only be stragglers of a room just left."""
        if isinstance(event, Joined):
            return self._on_joined(event)
        if isinstance(event, Message | Resumed | Presence):
            log = self.rooms.get(event.room)
            if log is None:
                return Step()
            if isinstance(event, Message):
                return Step(emit=list(log.on_message(event)))
            if isinstance(event, Resumed):
                return Step(emit=list(log.on_resumed(event)))
        elif isinstance(event, Left):
            if event.room in self.leaving:
                self.leaving.discard(event.room)
            else:  # removed by the server (API): not rejoined on the next connection
                self.rooms.pop(event.room, None)
        elif isinstance(event, Reconnect):
            self.hint_ms = event.after_ms
        return Step(emit=[event])

    def _on_joined(self, event: Joined) -> Step:
        step = Step()
        log = self.rooms.get(event.room)
        if log is not None:
            released, after = log.on_joined(event.last_id, self.backfill)
            step.emit.extend(released)
            if after is not None:
                step.send.append({"type": "resume", "room": event.room, "after": after})
        if event.room == LOBBY and not self.established:
            self._establish(step)
            if log is None:  # the program left the lobby: leave it on this connection too
                step.send.extend(self.leave_now(LOBBY))
        if log is not None:
            step.emit.append(event)
        return step

    def leave_now(self, room: str) -> list[Command]:
        self.leaving.add(room)
        return [{"type": "leave", "room": room}]

    def _establish(self, step: Step) -> None:
        self.established = True
        step.emit.insert(0, Connected(self.user, reconnected=self.was_connected))
        self.was_connected = True
        step.send.extend({"type": "join", "room": room} for room in self.rooms if room != LOBBY)
