"""Presence of one process: exact, and gone with the process."""

from __future__ import annotations

from collections import defaultdict

from gateway.presence.base import Presence

USER_ROOM = "\x00user"


class MemoryPresence(Presence):
    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))

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

    async def connections_of(self, user: str) -> int:
        return len(self._rooms.get(USER_ROOM, {}).get(user, ()))
