"""Who is online where, and who holds which client id.

Presence entries are per connection so one user's second tab does not vanish when the first
closes, and so a crashed worker's entries can age out on their own. A claim reserves the keys
of one id (:func:`gateway.identity.skeletons`) for one connection, atomically over every worker
sharing the backend: the uniqueness of URL ids rests on it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence


class Headcount(int):
    """A room's count of distinct users, and when the backend counted it.

    Workers publish the counts they read, and two workers' events can cross on their way to a
    third: without an order, the count that arrived last (not the newest) stayed the room's
    until its next change (a storm of 41 ended on "20 online"). ``counted_at`` is the shared
    backend's clock in microseconds, read in the same atomic step as the count; 0 where one
    process counts (its events arrive in the order they were counted).
    """

    counted_at: int

    def __new__(cls, count: int, counted_at: int = 0) -> Headcount:
        headcount = super().__new__(cls, count)
        headcount.counted_at = counted_at
        return headcount


class Presence(ABC):
    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect and start background refreshes; called in the worker process."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Stop refreshing and remove this worker's entries."""

    @abstractmethod
    async def add(self, room: str, user: str, connection_id: str) -> None: ...

    @abstractmethod
    async def remove(self, room: str, user: str, connection_id: str) -> None: ...

    @abstractmethod
    async def online(self, room: str) -> list[str]:
        """Distinct users with at least one live connection in ``room``, sorted."""

    @abstractmethod
    async def snapshot(self, room: str, limit: int) -> tuple[Headcount, list[str]]:
        """How many distinct users are in ``room``, and the first ``limit`` of them, sorted.

        What a join's ack and a presence event need: in a large room the caller gets a count
        and a capped list, without the whole room crossing to the worker."""

    async def join(
        self, room: str, user: str, connection_id: str, limit: int
    ) -> tuple[Headcount, list[str]]:
        """:meth:`add`, then :meth:`snapshot`: what a join needs. The count is read after the
        entry is written, so concurrent joins' counts see each other. The entry stands even
        when this raises ``BrokerUnavailable``."""
        await self.add(room, user, connection_id)
        return await self.snapshot(room, limit)

    async def leave(self, room: str, user: str, connection_id: str) -> Headcount:
        """:meth:`remove`, then the count of distinct users left (one script on Redis).
        The entry is gone even when this raises ``BrokerUnavailable`` (from the count)."""
        await self.remove(room, user, connection_id)
        count, _ = await self.snapshot(room, 0)
        return count

    @abstractmethod
    async def rooms(self) -> list[tuple[str, int]]:
        """Every room with a live member anywhere, and its count of distinct users, by name."""

    @abstractmethod
    async def connections_of(self, user: str) -> int:
        """Live connections of ``user`` anywhere (any room, any worker)."""

    @abstractmethod
    async def claim(self, keys: Sequence[str], connection_id: str) -> bool:
        """Take every key for ``connection_id`` if no live claim holds any; raises
        ``BrokerUnavailable`` when that cannot be known."""

    @abstractmethod
    async def release(self, keys: Sequence[str], connection_id: str) -> None:
        """Give back the keys ``connection_id`` holds; never raises (a claim left behind
        expires with its TTL)."""
