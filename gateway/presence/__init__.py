"""Presence backends chosen by the broker URL, imported lazily."""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway.broker.urls import SCHEMES
from gateway.presence.base import Headcount, Presence
from gateway.presence.memory import USER_ROOM, MemoryPresence

__all__ = ["USER_ROOM", "Headcount", "MemoryPresence", "Presence", "create_presence"]


def create_presence(url: str, ttl: float = 15.0, claim_ttl: float = 20.0) -> Presence:
    """``ttl``: how long a Redis entry outlives its last refresh (a dead worker's users);
    ``claim_ttl``: the same for a client id's claim (the heartbeat timeout)."""
    if urlsplit(url).scheme in SCHEMES - {"memory"}:
        from gateway.presence.redis import RedisPresence

        return RedisPresence(url, ttl, claim_ttl)
    return MemoryPresence()
