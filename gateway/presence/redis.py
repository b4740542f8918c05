"""Presence shared by every worker and host, through Redis sorted sets scored by expiry.

Each connection is a member ``user<US>connection`` of its room's set, scored with the moment it
expires; every worker re-scores its own members every third of the TTL. A worker that dies
stops refreshing, so its users age out within the TTL without anyone cleaning up after it (the
ghost-presence problem). Expiry uses Redis' clock, never a worker's, so hosts with skewed clocks
agree. Readers drop expired members as they read.

Writes never raise: the worker keeps its own entries and the next refresh writes them again,
which also restores presence after Redis restarts empty. Reads raise ``BrokerUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from gateway.broker import BrokerUnavailable
from gateway.broker.redis import COMMAND_TIMEOUT, UNAVAILABLE, connect, split_url
from gateway.presence.base import Presence
from gateway.presence.memory import USER_ROOM

log = logging.getLogger("gateway.presence")

SEPARATOR = "\x1f"
"""Between user and connection id in a member; user names cannot hold control characters."""

_NOW_MS = (
    "local now = redis.call('TIME') "
    "local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) "
)
REFRESH_SCRIPT = (
    _NOW_MS
    + """
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], ms + ttl, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ttl)
return #ARGV - 1
"""
)
MEMBERS_SCRIPT = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
)
COUNT_SCRIPT = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
return redis.call('ZCARD', KEYS[1])
"""
)


class RedisPresence(Presence):
    def __init__(self, url: str, ttl: float = 15.0) -> None:
        self.url, self.prefix = split_url(url)
        self.ttl_ms = max(int(ttl * 1000), 100)
        self.refresh_interval = ttl / 3
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._local: dict[str, set[str]] = {}
        """This worker's entries: key -> members, rewritten on every refresh."""
        self._refresher: asyncio.Task[None] | None = None
        self._failing = False

    def room_key(self, room: str) -> str:
        return f"{self.prefix}:presence:{room}"

    def user_key(self, user: str) -> str:
        return f"{self.prefix}:connections:{user}"

    def _entries(self, room: str, user: str, connection_id: str) -> list[tuple[str, str]]:
        entries = [(self.room_key(room), f"{user}{SEPARATOR}{connection_id}")]
        if room == USER_ROOM:
            entries.append((self.user_key(user), connection_id))
        return entries

    async def start(self) -> None:
        self._client = connect(self.url, retries=1)
        for name, source in (
            ("refresh", REFRESH_SCRIPT),
            ("members", MEMBERS_SCRIPT),
            ("count", COUNT_SCRIPT),
        ):
            self._scripts[name] = self._client.register_script(source)
        self._refresher = asyncio.create_task(self._refresh_forever(), name="gateway-presence")

    async def aclose(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self._client is None:
            return
        with contextlib.suppress(*UNAVAILABLE):
            async with asyncio.timeout(COMMAND_TIMEOUT):
                async with self._client.pipeline(transaction=False) as pipe:
                    for key, members in self._local.items():
                        pipe.zrem(key, *members)
                    await pipe.execute()
        self._local.clear()
        with contextlib.suppress(*UNAVAILABLE):
            await self._client.aclose()

    async def add(self, room: str, user: str, connection_id: str) -> None:
        entries = self._entries(room, user, connection_id)
        for key, member in entries:
            self._local.setdefault(key, set()).add(member)
        await self._write({key: {member} for key, member in entries})

    async def remove(self, room: str, user: str, connection_id: str) -> None:
        entries = self._entries(room, user, connection_id)
        for key, member in entries:
            members = self._local.get(key)
            if members is not None:
                members.discard(member)
                if not members:
                    del self._local[key]
        if self._client is None:
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, member in entries:
                    pipe.zrem(key, member)
                await pipe.execute()
        except UNAVAILABLE as error:
            log.debug("presence remove deferred to expiry: %s", error)

    async def online(self, room: str) -> list[str]:
        members = await self._read("members", self.room_key(room))
        return sorted({bytes(member).decode().partition(SEPARATOR)[0] for member in members})

    async def connections_of(self, user: str) -> int:
        return int(await self._read("count", self.user_key(user)))

    async def _read(self, script: str, key: str) -> Any:
        if self._client is None:
            raise BrokerUnavailable("presence not started")
        try:
            return await self._scripts[script](keys=[key])
        except UNAVAILABLE as error:
            raise BrokerUnavailable(f"presence: {error}") from error

    async def _write(self, entries: dict[str, set[str]]) -> None:
        """Score the members with a fresh expiry; a failure waits for the next refresh."""
        if self._client is None or not entries:
            return
        refresh = self._scripts["refresh"]
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, members in entries.items():
                    await refresh(keys=[key], args=[self.ttl_ms, *members], client=pipe)
                await pipe.execute()
        except UNAVAILABLE as error:
            if not self._failing:
                log.warning(
                    "presence refresh failed, retrying every %.1fs: %s",
                    self.refresh_interval,
                    error,
                )
            self._failing = True
            return
        if self._failing:
            log.info("presence refresh restored")
        self._failing = False

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            await self._write({key: set(members) for key, members in self._local.items()})
