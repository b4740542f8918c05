"""Per-room bookkeeping of what the client holds: resume points, duplicates, order. No I/O.

This is the chat page's ``RoomHistory`` (``gateway/static/protocol.js``) in Python, plus what a
program needs that a page does not: a page can insert a late message into its log at the right
place, while a client that hands events to a program one by one must hand them over in order.
So :class:`RoomLog` holds back the messages that arrive while a resume is outstanding (live ones
newer than ``last_id`` can overtake the replay of older ones) and releases them sorted when the
``resumed`` acknowledgement comes.

Memory stays bounded for a client that runs for months: everything up to the resume point is
held by definition, so a duplicate check only needs the ids above it (those that came during an
outstanding resume); the set of seen ids is emptied whenever the resume point catches up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.client.events import Message, Recovered, Resumed

_DECIMAL = re.compile(r"\d+")


def compare_ids(a: str, b: str) -> int:
    """Orders message ids of one room: decimal ids by value, anything else by length then
    text (as the page's ``compareIds``). Returns -1, 0 or 1."""
    if _DECIMAL.fullmatch(a) and _DECIMAL.fullmatch(b):
        x, y = int(a), int(b)
        return (x > y) - (x < y)
    if len(a) != len(b):
        return -1 if len(a) < len(b) else 1
    return (a > b) - (a < b)


class RoomHistory:
    """What the client holds of one room: the newest id (``last_id``), the newest id up to
    which it holds everything (``complete``: the resume point) and whether a resume is
    outstanding (``pending``).

    Live messages that arrive while a resume is outstanding lie beyond a gap, so they do not
    move the resume point: a client that drops again before the ``resumed`` ack asks again from
    before the gap instead of skipping it. When the server's ``last_id`` is older than what the
    client holds (or ``"0"``), the server's numbering started over (an in-memory broker that
    restarted): a new ``epoch`` begins instead of dropping its messages as duplicates.
    """

    def __init__(self) -> None:
        self.last_id: str | None = None
        self.complete: str | None = None
        self.pending = False
        self.seen: set[str] = set()
        """Ids above ``complete`` already accepted; ids at or below it are held by definition."""
        self.epoch = 0

    def accept(self, message_id: str) -> bool:
        """Records a message id; False if the client already holds it (a duplicate to drop)."""
        key = str(message_id)
        if key in self.seen or (self.complete is not None and compare_ids(key, self.complete) <= 0):
            return False
        if self.last_id is None or compare_ids(key, self.last_id) > 0:
            self.last_id = key
        if self.pending:
            self.seen.add(key)
        else:
            self.complete = self.last_id
            self.seen.clear()
        return True

    def resume_after(self, server_last_id: str | None) -> str | None:
        """The id to resume after once the room is joined, or None when nothing can have been
        missed; a non-None answer is a resume the client sends, outstanding until
        :meth:`resumed`. ``server_last_id`` is the ``joined`` ack's ``last_id`` (``"0"`` for an
        empty room), None when the server does not say (then the client asks)."""
        empty = server_last_id == "0"
        if server_last_id is not None and self.last_id is not None:
            order = compare_ids(server_last_id, self.last_id)
            if empty or order < 0:
                self.restart()
            elif order == 0 and not self.pending:
                return None
        if empty and self.last_id is None:
            # An empty room: nothing to ask for, and no outstanding resume can be owed either
            # (the page leaves ``pending`` as it was; here it cannot get stuck on).
            self.pending = False
            return None
        self.pending = True
        return self.complete if self.complete is not None else "0"

    def start_at(self, server_last_id: str) -> None:
        """Hold the room as complete up to ``server_last_id`` without asking for its history
        (a client that does not want a room's backlog on its first join)."""
        self.last_id = self.complete = server_last_id
        self.seen.clear()

    def resumed(self) -> None:
        """The server answered the resume: everything up to the newest held is held (or gone)."""
        self.pending = False
        self.complete = self.last_id
        self.seen.clear()

    def restart(self) -> None:
        """The server's numbering started over: forget the old one, begin a new epoch."""
        self.last_id = None
        self.complete = None
        self.pending = False
        self.seen.clear()
        self.epoch += 1


def _message_key(message: Message) -> tuple[int, str]:
    """Sort key consistent with :func:`compare_ids`."""
    if _DECIMAL.fullmatch(message.id):
        return (0, f"{len(message.id.lstrip('0')):08d}{message.id.lstrip('0')}")
    return (1, f"{len(message.id):08d}{message.id}")


@dataclass
class RoomLog:
    """One room as the program sees it: each message once, in id order, and a
    :class:`Recovered` event where history could not reach back."""

    room: str
    history: RoomHistory = field(default_factory=RoomHistory)
    held: list[Message] = field(default_factory=list)
    """Messages accepted while a resume is outstanding, released in order by ``resumed``.
    Bounded by one replay (the server's history) plus the live traffic of the round trips the
    resume takes."""
    asked_after: str | None = None
    """The ``after`` of the outstanding resume."""

    def on_joined(
        self, last_id: str | None, backfill: bool = True
    ) -> tuple[list[Message | Recovered], str | None]:
        """The events to hand over now (held messages of an old numbering, then a
        :class:`Recovered` for it) and the id to resume after (None: nothing to ask)."""
        out: list[Message | Recovered] = []
        history = self.history
        fresh = history.last_id is None and not history.pending
        if not backfill and fresh and last_id is not None and last_id != "0":
            history.start_at(last_id)
        epoch = history.epoch
        previous = history.last_id
        after = history.resume_after(last_id)
        if history.epoch != epoch:
            out.extend(self._release())
            reason = "the server's numbering started over"
            out.append(Recovered(self.room, previous or "0", reason=reason))
        if after is not None:
            self.asked_after = after
        return out, after

    def on_message(self, message: Message) -> list[Message]:
        """What to hand over for this message: itself, nothing (a duplicate, or held back
        until the outstanding resume is answered)."""
        if not self.history.accept(message.id):
            return []
        if self.history.pending:
            self.held.append(message)
            return []
        return [message]

    def on_resumed(self, event: Resumed) -> list[Message | Recovered | Resumed]:
        """A gap marker if history did not reach back, the held messages in order, the ack."""
        out: list[Message | Recovered | Resumed] = []
        if not event.recovered:
            out.append(Recovered(self.room, self.asked_after or "0"))
        self.history.resumed()
        self.asked_after = None
        out.extend(self._release())
        out.append(event)
        return out

    def _release(self) -> list[Message]:
        held, self.held = sorted(self.held, key=_message_key), []
        return held
