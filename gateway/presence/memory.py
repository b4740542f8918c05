"""Presence of one process: exact, and gone with the process.

Each room keeps its users in name order as they come and go (a binary search and a move of
pointers), so a join's count and first names cost O(log N + names): picking the first names
out of the whole room on every join made a storm of N joins O(N²) here too (a third of one
process' CPU in a 3,000-client storm, py-spy).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from gateway.presence.base import Headcount, Presence

USER_ROOM = "\x00user"


class _Room:
    __slots__ = ("connections", "names")

    def __init__(self) -> None:
        self.connections: dict[str, set[str]] = {}
        """user -> connection ids"""
        self.names: list[str] = []
        """The users, sorted."""


class MemoryPresence(Presence):
    def __init__(self) -> None:
        self._rooms: dict[str, _Room] = {}
        self._claims: dict[str, str] = {}

    async def add(self, room: str, user: str, connection_id: str) -> None:
        members = self._rooms.get(room)
        if members is None:
            members = self._rooms[room] = _Room()
        connections = members.connections.get(user)
        if connections is None:
            connections = members.connections[user] = set()
            bisect.insort(members.names, user)
        connections.add(connection_id)

    async def remove(self, room: str, user: str, connection_id: str) -> None:
        members = self._rooms.get(room)
        if members is None or user not in members.connections:
            return
        connections = members.connections[user]
        connections.discard(connection_id)
        if connections:
            return
        del members.connections[user]
        del members.names[bisect.bisect_left(members.names, user)]
        if not members.connections:
            del self._rooms[room]

    async def online(self, room: str) -> list[str]:
        members = self._rooms.get(room)
        return [] if members is None else list(members.names)

    async def snapshot(self, room: str, limit: int) -> tuple[Headcount, list[str]]:
        members = self._rooms.get(room)
        if members is None:
            return Headcount(0), []
        return Headcount(len(members.names)), members.names[: max(limit, 0)]

    async def rooms(self) -> list[tuple[str, int]]:
        return sorted(
            (room, len(members.names)) for room, members in self._rooms.items() if room != USER_ROOM
        )

    async def connections_of(self, user: str) -> int:
        members = self._rooms.get(USER_ROOM)
        return 0 if members is None else len(members.connections.get(user, ()))

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
