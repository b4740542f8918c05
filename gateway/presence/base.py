"""Who is online where. Entries are per connection so one user's second tab does not vanish
when the first closes, and so a crashed worker's entries can age out on their own."""

from __future__ import annotations

from abc import ABC, abstractmethod


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
    async def connections_of(self, user: str) -> int:
        """Live connections of ``user`` anywhere (any room, any worker)."""
