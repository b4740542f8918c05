"""The embedded broker: one process, no other server. Publishing is synchronous fan-out.

History dies with the process, but ids must not go backwards when it restarts: a client that
resumes after id 41 would otherwise never see the new process's messages 1..41. So each
channel's sequence starts at the time it was first used, in microseconds; ids stay increasing
across restarts as long as a process publishes fewer than a million messages a second.
That clock value is the channel's base (like Redis' meta ``b``): an ``after`` below it is an id
of an earlier process, whose messages are gone; from the base up the history may be whole.
"""

from __future__ import annotations

import time
from collections import deque

from gateway import metrics
from gateway.broker.base import Broker, DeliverFn, Envelope, History


class MemoryBroker(Broker):
    def __init__(self, deliver: DeliverFn, history_size: int) -> None:
        super().__init__(deliver, history_size)
        self._subscribed: set[str] = set()
        self._sequences: dict[str, int] = {}
        self._bases: dict[str, int] = {}
        self._history: dict[str, deque[Envelope]] = {}
        self._store: dict[str, tuple[str, float]] = {}
        """key -> (value, monotonic expiry)"""

    async def start(self) -> None:
        metrics.BROKER_UP.set(1)  # in this process: up for as long as the process lives

    async def publish(self, envelope: Envelope, *, keep: bool) -> Envelope:
        if keep:
            seq = self._sequences.get(envelope.channel)
            if seq is None:
                seq = self._bases[envelope.channel] = time.time_ns() // 1000
            seq += 1
            self._sequences[envelope.channel] = seq
            envelope.seq = seq
            envelope.event["id"] = str(seq)
            if self.history_size:
                ring = self._history.get(envelope.channel)
                if ring is None:
                    ring = self._history[envelope.channel] = deque(maxlen=self.history_size)
                ring.append(envelope)
        if envelope.channel in self._subscribed:
            self.deliver(envelope)
        return envelope

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)

    async def history(self, channel: str, after: int) -> History:
        last = self._sequences.get(channel)
        if last is None:
            return History([], complete=after == 0)
        ring = self._history.get(channel, ())
        kept = [envelope for envelope in ring if envelope.seq > after]
        if after >= last:
            return History(kept, complete=True)
        base = self._bases[channel]
        if after != 0 and after < base:
            return History(kept, complete=False)
        oldest = ring[0].seq if ring else last + 1
        return History(kept, complete=oldest <= max(after, base) + 1)

    async def last_id(self, channel: str) -> int:
        return self._sequences.get(channel, 0)

    def _live(self, key: str) -> str | None:
        held = self._store.get(key)
        if held is None:
            return None
        if held[1] <= time.monotonic():
            del self._store[key]
            return None
        return held[0]

    async def put_if_absent(self, key: str, value: str, ttl: float) -> str | None:
        existing = self._live(key)
        if existing is None:
            self._store[key] = (value, time.monotonic() + ttl)
        if len(self._store) > 1024 and existing is None:
            for stale in [k for k, (_, at) in self._store.items() if at <= time.monotonic()]:
                del self._store[stale]
        return existing

    async def put(self, key: str, value: str, ttl: float) -> None:
        self._store[key] = (value, time.monotonic() + ttl)

    async def delete_if(self, key: str, value: str) -> None:
        if self._live(key) == value:
            del self._store[key]
