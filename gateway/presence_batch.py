"""Presence changes of a room, batched per window, so a join storm costs O(N) frames, not O(N²).

Every join and leave is published as today (one small event per change, to every worker of the
room); what changes is the receiving side. Each worker turns the changes of one room into at
most one event per ``GATEWAY_PRESENCE_BATCH_MS`` window for each local member, whoever on the
fleet published them:

* the first change after a quiet window goes out at once, as today's event, and opens a window;
* changes inside the window wait for its end: one change is today's event again, several are a
  ``diff`` (``joined``, ``left``), and a join and a leave of one user inside it cancel out;
* in a room above ``GATEWAY_PRESENCE_NAMES_MAX`` members only ``count`` events, at most one a
  window and one every :data:`COUNT_INTERVAL`: a count a second says all a client of a room
  that size can show, and a storm's members then hear about one event a second, not four.

A member hears only the changes after its own subscription (its ``joined`` ack already listed
who was there): the window's event is shared by everyone who was in the room before the window
began, and a member who joined during it gets the part after its mark. So a small room sees
today's events (at most one window later), and a storm of N joins into one room sends each
member one event per window instead of N. A window of 0 sends every change as it comes.

Changes from several workers can cross on their way here, so a count carries when the shared
backend read it (``counted_at``, see :class:`gateway.presence.Headcount`): a change counted
before the newest count seen here goes out with that newest count, not its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from gateway.presence.base import Headcount

PresenceEvent = dict[str, Any]

COUNTED_AT = "counted_at"
"""Where a published change carries when its count was read; never sent to a client."""

COUNT_INTERVAL = 1.0
"""Seconds a window lasts at least after a ``count`` event (the SPEC allows at most one a window,
so fewer); windows stay ``GATEWAY_PRESENCE_BATCH_MS`` while the room names its members."""


class Batch:
    """One window's changes of one room, numbered by the room's change counter."""

    __slots__ = ("changes", "first", "room")

    def __init__(self, room: str, first: int, changes: list[PresenceEvent]) -> None:
        self.room = room
        self.first = first
        """The counter value of ``changes[0]``."""
        self.changes = changes


Flush = Callable[[str, Batch], None]
"""Called with the room channel and a batch to send to the channel's local members."""


class _Room:
    __slots__ = ("counted", "newest", "newest_at", "pending", "timer")

    def __init__(self) -> None:
        self.counted = 0
        """Changes of this room received so far: marks and batches are numbered by it."""
        self.pending: list[PresenceEvent] = []
        self.timer: asyncio.TimerHandle | None = None
        self.newest = 0
        self.newest_at = 0
        """The count read last by the shared backend, and when (0: none seen)."""

    def newest_count(self, online: int, counted_at: int) -> int:
        """``online`` if it is the newest count seen, else the newest."""
        if counted_at < self.newest_at:
            return self.newest
        self.newest, self.newest_at = online, counted_at
        return online


class PresenceBatcher:
    def __init__(self, window_seconds: float, names_max: int, flush: Flush) -> None:
        self.window = window_seconds
        self.names_max = names_max
        self._flush = flush
        self._rooms: dict[str, _Room] = {}

    def mark(self, channel: str) -> int:
        """Where a new member starts: it will hear the changes numbered above this."""
        room = self._rooms.get(channel)
        return room.counted if room is not None else 0

    def add(self, channel: str, change: PresenceEvent) -> None:
        """A ``joined``/``left`` presence event of the room on ``channel``, from any worker."""
        room = self._room(channel)
        counted_at = change.pop(COUNTED_AT, 0)
        if counted_at:
            online = room.newest_count(change["online"], counted_at)
            if online != change["online"]:
                change = {**change, "online": online}
        room.counted += 1
        if room.timer is not None:
            room.pending.append(change)
            return
        self._flush(channel, Batch(change["room"], room.counted, [change]))
        self._open_window(channel, room, change["online"])

    def counted(self, channel: str, online: Headcount) -> None:
        """A count read here (a join's ack): changes counted before it are stale too."""
        if online.counted_at:
            self._room(channel).newest_count(int(online), online.counted_at)

    def _room(self, channel: str) -> _Room:
        room = self._rooms.get(channel)
        if room is None:
            room = self._rooms[channel] = _Room()
        return room

    def forget(self, channel: str) -> None:
        """The last local member left: nothing of the room is needed any more."""
        room = self._rooms.pop(channel, None)
        if room is not None and room.timer is not None:
            room.timer.cancel()

    def aclose(self) -> None:
        for channel in list(self._rooms):
            self.forget(channel)

    def _open_window(self, channel: str, room: _Room, online: int) -> None:
        """``online``: the count just sent; above the names threshold that was a ``count``."""
        if self.window > 0:
            length = self.window
            if online > self.names_max:
                length = max(length, COUNT_INTERVAL)
            loop = asyncio.get_running_loop()
            room.timer = loop.call_later(length, self._end_window, channel, room)

    def _end_window(self, channel: str, room: _Room) -> None:
        """Send what the window gathered; an empty window closes, a busy one opens the next."""
        room.timer = None
        changes, room.pending = room.pending, []
        if changes:
            first = room.counted - len(changes) + 1
            self._flush(channel, Batch(changes[0]["room"], first, changes))
            self._open_window(channel, room, changes[-1]["online"])

    def event(self, batch: Batch, after: int = 0) -> PresenceEvent | None:
        """The event for a member whose mark is ``after``: the batch's changes above it, net
        (a join and a leave of one user cancel out); None when nothing is left to say."""
        changes = batch.changes[max(after - batch.first + 1, 0) :]
        if not changes:
            return None
        online = changes[-1]["online"]
        ts = changes[-1].get("ts", time.time())
        if online > self.names_max:
            return {
                "type": "presence",
                "room": batch.room,
                "event": "count",
                "online": online,
                "ts": ts,
            }
        if len(changes) == 1:
            return changes[0]
        joined, left = _net(changes)
        if len(joined) + len(left) == 1:
            return {**(joined or left)[0], "online": online}
        if not joined and not left:
            return None
        return {
            "type": "presence",
            "room": batch.room,
            "event": "diff",
            "joined": [change["user"] for change in joined],
            "left": [change["user"] for change in left],
            "online": online,
            "ts": ts,
        }


def _net(changes: list[PresenceEvent]) -> tuple[list[PresenceEvent], list[PresenceEvent]]:
    joined: dict[str, PresenceEvent] = {}
    left: dict[str, PresenceEvent] = {}
    for change in changes:
        user = change["user"]
        arrived = change["event"] == "joined"
        undone, done = (left, joined) if arrived else (joined, left)
        if user in undone:  # left and back, or joined and gone, within the window
            del undone[user]
        else:
            done[user] = change
    return list(joined.values()), list(left.values())
