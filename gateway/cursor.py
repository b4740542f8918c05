"""A connection's place in one room's id sequence: what it was offered, what it holds back."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.broker import Envelope
from gateway.outbox import Outbox, OutFrame


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

    def replay(self, messages: list[Envelope], outbox: Outbox) -> int:
        """Offer the kept messages this connection was not offered yet; returns how many."""
        passed = 0
        for envelope in messages:
            seq = envelope.seq
            if self.floor < seq <= self.last_seq:
                continue
            self.last_seq = max(self.last_seq, seq)
            passed += 1
            outbox.offer(OutFrame(envelope.event, seq=seq))
        return passed

    def release(self, outbox: Outbox) -> int:
        """Stop holding; offer the held frames newer than the cursor, returns how many."""
        held, self.held = self.held or [], None
        passed = 0
        for frame in held:
            if frame.seq > self.last_seq:
                self.last_seq = frame.seq
                passed += 1
                outbox.offer(frame)
        return passed
