"""Presence of one process: exact, and gone with the process."""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Sequence

from gateway.presence.base import Presence

USER_ROOM = "\x00user"


class MemoryPresence(Presence):
    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        self._claims: dict[str, str] = {}

    async def add(self, room: str, user: str, connection_id: str) -> None:
        self._rooms[room][user].add(connection_id)

    async def remove(self, room: str, user: str, connection_id: str) -> None:
        users = self._rooms.get(room)
        if users is None or user not in users:
            return
        users[user].discard(connection_id)
        if not users[user]:
            del users[user]
        if not users:
            del self._rooms[room]

    async def online(self, room: str) -> list[str]:
        return sorted(self._rooms.get(room, {}))

    async def snapshot(self, room: str, limit: int) -> tuple[int, list[str]]:
        users = self._rooms.get(room, {})
        return len(users), heapq.nsmallest(limit, users)

    async def rooms(self) -> list[tuple[str, int]]:
        return sorted(
            (room, len(users)) for room, users in self._rooms.items() if room != USER_ROOM
        )

    async def connections_of(self, user: str) -> int:
        return len(self._rooms.get(USER_ROOM, {}).get(user, ()))

    async def claim(self, keys: Sequence[str], connection_id: str) -> bool:
        """Atomic in the process: nothing awaits between the check and the write."""
        if any(self._claims.get(key, connection_id) != connection_id for key in keys):
            return False
        self._claims.update(dict.fromkeys(keys, connection_id))
        return True

    async def release(self, keys: Sequence[str], connection_id: str) -> None:
        for key in keys:
            if self._claims.get(key) == connection_id:
                del self._claims[key]
