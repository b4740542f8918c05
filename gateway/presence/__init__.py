"""Presence backends chosen by the broker URL, imported lazily."""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway.presence.base import Presence
from gateway.presence.memory import USER_ROOM, MemoryPresence

__all__ = ["USER_ROOM", "MemoryPresence", "Presence", "create_presence"]


def create_presence(url: str) -> Presence:
    if urlsplit(url).scheme in {"redis", "rediss"}:
        from gateway.presence.redis import RedisPresence  # type: ignore[import-not-found,unused-ignore]

        return RedisPresence(url)  # type: ignore[no-any-return,unused-ignore]
    return MemoryPresence()
