"""Presence shared by every worker and host, through Redis sorted sets scored by expiry.

Each connection is a member ``user<US>connection`` of its room's set, scored with the moment it
expires; every worker re-scores its own members every third of the TTL. A worker that dies
stops refreshing, so its users age out within the TTL without anyone cleaning up after it (the
ghost-presence problem). Expiry uses Redis' clock, never a worker's, so hosts with skewed clocks
agree. Readers drop expired members as they read.

Writes never raise: the worker keeps its own entries and the next refresh writes them again,
which also restores presence after Redis restarts empty. Reads raise ``BrokerUnavailable``.

A claim is one key per skeleton of an id, set only if none of them is held (one script, so
atomic over the fleet), holding a value unique to the worker and connection and expiring after
``claim_ttl`` (the heartbeat timeout): a dead worker's ids are free again within it. The
refresher renews every claim of the worker, and re-scores its presence entries, in one pipeline.
Refreshes and removals take turns: a refresh that read an entry before it was removed must not
write it back after the removal (it did, and the id stayed taken for a whole TTL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterator, Sequence
from typing import Any

from redis.exceptions import NoScriptError

from gateway.broker import BrokerUnavailable
from gateway.broker.connect import COMMAND_TIMEOUT, UNAVAILABLE, connect, split_url
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
SNAPSHOT_SCRIPT = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
local seen, users = {}, {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local cut = string.find(member, string.char(31), 1, true)
  local user = cut and string.sub(member, 1, cut - 1) or member
  if not seen[user] then
    seen[user] = true
    users[#users + 1] = user
  end
end
table.sort(users)
local names = {}
for i = 1, math.min(tonumber(ARGV[1]), #users) do names[i] = users[i] end
return {#users, names}
"""
)
"""Distinct users and the first ``limit`` of them, counted and sorted in Redis: a join in a room
of N costs the worker O(limit), not N members decoded, deduplicated and sorted in Python."""
CLAIM_SCRIPT = """
for i = 1, #KEYS do
  local holder = redis.call('GET', KEYS[i])
  if holder and holder ~= ARGV[1] then return 0 end
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
end
return 1
"""
RELEASE_SCRIPT = """
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return #KEYS
"""
RENEW_SCRIPT = """
local lost = 0
for i = 1, #KEYS do
  local holder = redis.call('GET', KEYS[i])
  if holder == ARGV[i + 1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
  elseif not holder then
    redis.call('SET', KEYS[i], ARGV[i + 1], 'PX', ARGV[1])
  else
    lost = lost + 1
  end
end
return lost
"""
"""Renew each key still ours, restore one gone with Redis (a restart), leave another's alone."""
CHUNK = 500
"""Claims per script call in a refresh, so no call blocks Redis for long."""
COUNT_SCRIPT = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
return redis.call('ZCARD', KEYS[1])
"""
)


class RedisPresence(Presence):
    def __init__(self, url: str, ttl: float = 15.0, claim_ttl: float = 20.0) -> None:
        self.url, self.prefix = split_url(url)
        self.ttl_ms = max(int(ttl * 1000), 100)
        self.claim_ttl_ms = max(int(claim_ttl * 1000), 300)
        self.refresh_interval = min(self.ttl_ms, self.claim_ttl_ms) / 3000
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._local: dict[str, set[str]] = {}
        """This worker's entries: key -> members, rewritten on every refresh."""
        self._claims: dict[str, str] = {}
        """This worker's claims: key -> holder, renewed on every refresh."""
        self._token = secrets.token_hex(8)
        """Tells this worker's holders from another's (connection ids repeat across workers)."""
        self._turn = asyncio.Lock()
        """Held by a refresh from its snapshot to its write, and by a removal's write."""
        self._refresher: asyncio.Task[None] | None = None
        self._failing = False

    def room_key(self, room: str) -> str:
        return f"{self.prefix}:presence:{room}"

    def user_key(self, user: str) -> str:
        return f"{self.prefix}:connections:{user}"

    def claim_key(self, skeleton: str) -> str:
        """One hash tag for every claim: a script takes several keys, in one cluster slot."""
        return f"{self.prefix}:{{claims}}:{skeleton}"

    def _holder(self, connection_id: str) -> str:
        return f"{self._token}:{connection_id}"

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
            ("snapshot", SNAPSHOT_SCRIPT),
            ("count", COUNT_SCRIPT),
            ("claim", CLAIM_SCRIPT),
            ("release", RELEASE_SCRIPT),
            ("renew", RENEW_SCRIPT),
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
        with contextlib.suppress(*UNAVAILABLE, NoScriptError):
            async with asyncio.timeout(COMMAND_TIMEOUT):
                if self._claims:
                    await self._load_scripts()  # a cluster's pipeline does not
                async with self._client.pipeline(transaction=False) as pipe:
                    for key, members in self._local.items():
                        pipe.zrem(key, *members)
                    for holder, keys in _by_holder(self._claims).items():
                        await self._scripts["release"](keys=keys, args=[holder], client=pipe)
                    await pipe.execute()
        self._local.clear()
        self._claims.clear()
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
            async with (
                asyncio.timeout(COMMAND_TIMEOUT),
                self._turn,
                self._client.pipeline(transaction=False) as pipe,
            ):
                for key, member in entries:
                    pipe.zrem(key, member)
                await pipe.execute()
        except UNAVAILABLE as error:
            log.debug("presence remove deferred to expiry: %s", error)

    async def claim(self, keys: Sequence[str], connection_id: str) -> bool:
        if self._client is None:
            raise BrokerUnavailable("presence not started")
        holder, claim_keys = self._holder(connection_id), [self.claim_key(k) for k in keys]
        try:
            taken = await self._scripts["claim"](keys=claim_keys, args=[holder, self.claim_ttl_ms])
        except UNAVAILABLE as error:
            raise BrokerUnavailable(f"presence: {error}") from error
        if taken:
            self._claims.update(dict.fromkeys(claim_keys, holder))
        return bool(taken)

    async def release(self, keys: Sequence[str], connection_id: str) -> None:
        holder, claim_keys = self._holder(connection_id), [self.claim_key(k) for k in keys]
        for key in claim_keys:
            if self._claims.get(key) == holder:
                del self._claims[key]
        if self._client is None:
            return
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT), self._turn:
                await self._scripts["release"](keys=claim_keys, args=[holder])
        except UNAVAILABLE as error:
            log.debug("claim release deferred to expiry: %s", error)

    async def online(self, room: str) -> list[str]:
        members = await self._read("members", self.room_key(room))
        return sorted({bytes(member).decode().partition(SEPARATOR)[0] for member in members})

    async def rooms(self) -> list[tuple[str, int]]:
        """``SCAN`` over the presence keys (O(keys in Redis): an operator's call, not a hot
        path), then each room's live members in one pipeline."""
        if self._client is None:
            raise BrokerUnavailable("presence not started")
        head = self.room_key("")
        pattern = _glob_escape(head) + "*"
        try:
            keys = sorted(
                {bytes(key).decode() async for key in self._client.scan_iter(pattern, 1000)}
                - {self.room_key(USER_ROOM)}
            )
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    await self._scripts["members"](keys=[key], client=pipe)
                results = await pipe.execute()
        except UNAVAILABLE as error:
            raise BrokerUnavailable(f"presence: {error}") from error
        counts = []
        for key, members in zip(keys, results, strict=True):
            users = {bytes(member).decode().partition(SEPARATOR)[0] for member in members}
            if users:
                counts.append((key[len(head) :], len(users)))
        return counts

    async def snapshot(self, room: str, limit: int) -> tuple[int, list[str]]:
        count, names = await self._read("snapshot", self.room_key(room), max(limit, 0))
        # Lua sorts with the server's collation; the order clients see is Python's, as online()'s.
        return int(count), sorted(bytes(name).decode() for name in names)

    async def connections_of(self, user: str) -> int:
        return int(await self._read("count", self.user_key(user)))

    async def _read(self, script: str, key: str, *args: Any) -> Any:
        if self._client is None:
            raise BrokerUnavailable("presence not started")
        try:
            return await self._scripts[script](keys=[key], args=list(args))
        except UNAVAILABLE as error:
            raise BrokerUnavailable(f"presence: {error}") from error

    async def _write(
        self, entries: dict[str, set[str]], claims: dict[str, str] | None = None
    ) -> None:
        """Score the members (and renew the claims) with a fresh expiry, in one pipeline; a
        failure waits for the next refresh."""
        if self._client is None or not (entries or claims):
            return
        try:
            try:
                results = await self._pipelined(entries, claims or {})
            except NoScriptError:
                # A cluster's pipeline does not load scripts as a plain one does: load them on
                # every primary (a new or restarted one has none) and write once more.
                await self._load_scripts()
                results = await self._pipelined(entries, claims or {})
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
        lost = sum(int(result) for result in results[len(entries) :])
        if lost:
            log.warning("%d client id claims were taken over after expiring unrenewed", lost)

    async def _pipelined(self, entries: dict[str, set[str]], claims: dict[str, str]) -> Any:
        refresh, renew = self._scripts["refresh"], self._scripts["renew"]
        async with self._client.pipeline(transaction=False) as pipe:
            for key, members in entries.items():
                await refresh(keys=[key], args=[self.ttl_ms, *members], client=pipe)
            for keys, holders in _chunks(claims):
                await renew(keys=keys, args=[self.claim_ttl_ms, *holders], client=pipe)
            return await pipe.execute()

    async def _load_scripts(self) -> None:
        for script in self._scripts.values():
            await self._client.script_load(script.script)

    async def refresh(self) -> None:
        """Rewrite this worker's entries and renew its claims, as they are now."""
        async with self._turn:
            entries = {key: set(members) for key, members in self._local.items()}
            await self._write(entries, dict(self._claims))

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            await self.refresh()


def _chunks(claims: dict[str, str]) -> Iterator[tuple[list[str], list[str]]]:
    items = list(claims.items())
    for first in range(0, len(items), CHUNK):
        chunk = items[first : first + CHUNK]
        yield [key for key, _ in chunk], [holder for _, holder in chunk]


def _by_holder(claims: dict[str, str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, holder in claims.items():
        grouped.setdefault(holder, []).append(key)
    return grouped


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis ``SCAN MATCH`` pattern."""
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)
