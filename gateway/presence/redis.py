"""Presence shared by every worker and host, through Redis sorted sets scored by expiry.

Each connection is a member ``user<US>connection`` of its room's set, scored with the moment it
expires; every worker re-scores its own members every third of the TTL. A worker that dies
stops refreshing, so its users age out within the TTL without anyone cleaning up after it (the
ghost-presence problem). Expiry uses Redis' clock, never a worker's, so hosts with skewed clocks
agree. Beside the set, each room keeps its distinct users, counted and ordered by name, which
every script brings up to date before it reads (:mod:`gateway.presence.scripts`): a join costs
O(log N + names) in a room of N. Script calls issued while one is in flight go to Redis as one
pipeline (:mod:`gateway.broker.pipelining`): a reconnect storm's claims, entries and counts
cost a write and a read per batch, not per command.

Writes never raise: the worker keeps its own entries and the next refresh writes them again,
which also restores presence after Redis restarts empty. Reads raise ``BrokerUnavailable``.

A claim is one key per skeleton of an id, set only if none of them is held (one script, so
atomic over the fleet), holding a value unique to the worker and connection and expiring after
``claim_ttl`` (the heartbeat timeout): a dead worker's ids are free again within it. The
refresher renews every claim of the worker, and re-scores its presence entries, in one pipeline.
A removal waits for a refresh in flight: one that read an entry before it was removed must not
write it back after the removal (it did, and the id stayed taken for a whole TTL). Removals do
not wait for each other, so a drain of thousands is paced by Redis round trips, not their sum.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from gateway.broker import BrokerUnavailable
from gateway.broker.connect import COMMAND_TIMEOUT, UNAVAILABLE, connect, split_url
from gateway.broker.pipelining import Pipeliner
from gateway.presence.base import Headcount, Presence
from gateway.presence.memory import USER_ROOM
from gateway.presence.scripts import SCRIPTS

log = logging.getLogger("gateway.presence")

SEPARATOR = "\x1f"
"""Between user and connection id in a member; user names cannot hold control characters."""
CHUNK = 500
"""Entries or claims per script call in a refresh, so no call blocks Redis for long."""
Call = tuple[str, list[str], list[Any]]
"""A script's name, keys and arguments, for a pipeline."""
NAMES_FRESH = 1.0
"""Seconds this worker's joins reuse the name list of a room larger than the list: a storm of
joins into a 10,000-member room then costs Redis a count each, not 1,000 names each. Such a
list is partial anyway (the room's events name nobody); the count stays exact."""


class RedisPresence(Presence):
    def __init__(self, url: str, ttl: float = 15.0, claim_ttl: float = 20.0) -> None:
        self.url, self.prefix = split_url(url)
        self.ttl_ms = max(int(ttl * 1000), 100)
        self.claim_ttl_ms = max(int(claim_ttl * 1000), 300)
        self.refresh_interval = min(self.ttl_ms, self.claim_ttl_ms) / 3000
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._pipeliner: Pipeliner | None = None
        self._rooms: dict[str, set[str]] = {}
        """This worker's entries: room -> members, rewritten on every refresh."""
        self._connections: dict[str, set[str]] = {}
        """This worker's connections: user -> connection ids, rewritten on every refresh."""
        self._claims: dict[str, str] = {}
        """This worker's claims: key -> holder, renewed on every refresh."""
        self._token = secrets.token_hex(8)
        """Tells this worker's holders from another's (connection ids repeat across workers)."""
        self._turn = asyncio.Lock()
        """One refresh at a time."""
        self._written = asyncio.Event()
        """Clear while a refresh's write is in flight: removals wait for it."""
        self._written.set()
        self._refresher: asyncio.Task[None] | None = None
        self._failing = False
        self._lists: dict[str, tuple[float, int, list[str]]] = {}
        """Rooms larger than their list: room -> (when read, limit, names)."""

    def room_keys(self, room: str) -> list[str]:
        """Connections, user counts, names: one hash tag, so one cluster slot for a script.
        What follows the tag differs, so a prefix holding a brace cannot split them."""
        head = f"{self.prefix}:presence:{{{room}}}"
        return [head, f"{head}:users", f"{head}:names"]

    def user_key(self, user: str) -> str:
        return f"{self.prefix}:connections:{user}"

    def claim_key(self, skeleton: str) -> str:
        """One hash tag for every claim: a script takes several keys, in one cluster slot."""
        return f"{self.prefix}:{{claims}}:{skeleton}"

    def _holder(self, connection_id: str) -> str:
        return f"{self._token}:{connection_id}"

    async def start(self) -> None:
        self._client = connect(self.url, retries=1)
        for name, source in SCRIPTS.items():
            self._scripts[name] = self._client.register_script(source)
        if not isinstance(self._client, RedisCluster):
            sources = {script.sha: script.script for script in self._scripts.values()}
            self._pipeliner = Pipeliner(self._client, sources)
        self._refresher = asyncio.create_task(self._refresh_forever(), name="gateway-presence")

    async def aclose(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self._pipeliner is not None:
            await self._pipeliner.aclose()
        if self._client is None:
            return
        calls: list[Call] = [
            ("room_leave", self.room_keys(room), chunk)
            for room, members in self._rooms.items()
            for chunk in _chunked(members)
        ]
        for user, connections in self._connections.items():
            calls.append(("connections_leave", [self.user_key(user)], list(connections)))
        for holder, keys in _by_holder(self._claims).items():
            calls.append(("release", keys, [holder]))
        with contextlib.suppress(*UNAVAILABLE, NoScriptError):
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await self._run(calls)
        self._rooms.clear()
        self._connections.clear()
        self._claims.clear()
        with contextlib.suppress(*UNAVAILABLE):
            await self._client.aclose()

    async def add(self, room: str, user: str, connection_id: str) -> None:
        name, keys, entry = self._keep(room, user, connection_id)
        if self._client is None:
            return
        try:
            await self._call(name, keys, [self.ttl_ms, entry])
        except UNAVAILABLE as error:
            log.debug("presence write deferred to the next refresh: %s", error)

    async def join(
        self, room: str, user: str, connection_id: str, limit: int
    ) -> tuple[Headcount, list[str]]:
        if room == USER_ROOM:
            return await super().join(room, user, connection_id, limit)
        keys = self.room_keys(room)
        now, limit = time.monotonic(), max(limit, 0)
        when, listed, names = self._lists.get(room, (0.0, -1, []))
        reuse = listed == limit and now - when < NAMES_FRESH
        # The entry, then the count in a second round trip: counted in the same step as its own
        # entry, a storm's joins carried every count from 2 to N, and the one published last
        # across workers (not the largest) was the room's count for good (a storm of 41 ended
        # on "20 online"). Read after, the counts of concurrent joins see each other.
        await self.add(room, user, connection_id)
        count, raw = _headcount(await self._read("room_snapshot", keys, 0 if reuse else limit))
        if not reuse:
            names = _names(raw)
        elif count <= limit:
            count, names = await self.snapshot(room, limit)
        if count > limit > 0:
            self._lists[room] = (when if reuse else now, limit, names)
        else:
            self._lists.pop(room, None)
        return count, names

    def _keep(self, room: str, user: str, connection_id: str) -> tuple[str, list[str], str]:
        """Hold the entry locally (refreshes write it); the script, keys and entry to write."""
        if room == USER_ROOM:
            self._connections.setdefault(user, set()).add(connection_id)
            return "connections_write", [self.user_key(user)], connection_id
        member = f"{user}{SEPARATOR}{connection_id}"
        self._rooms.setdefault(room, set()).add(member)
        return "room_write", self.room_keys(room), member

    async def remove(self, room: str, user: str, connection_id: str) -> None:
        call = self._forget(room, user, connection_id)
        if self._client is None:
            return
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await self._written.wait()
                await self._call(*call)
        except UNAVAILABLE as error:
            log.debug("presence remove deferred to expiry: %s", error)

    async def leave(self, room: str, user: str, connection_id: str) -> Headcount:
        if room == USER_ROOM:
            return await super().leave(room, user, connection_id)
        name, keys, args = self._forget(room, user, connection_id)
        if self._client is None:
            raise BrokerUnavailable("presence not started")
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await self._written.wait()
        except TimeoutError as error:
            raise BrokerUnavailable("presence: a refresh held the removal too long") from error
        count, counted_at = await self._read(name, keys, *args)
        return Headcount(count, counted_at)

    def _forget(self, room: str, user: str, connection_id: str) -> Call:
        """Drop the entry locally; the script call that removes it from Redis."""
        if room == USER_ROOM:
            _discard(self._connections, user, connection_id)
            return ("connections_leave", [self.user_key(user)], [connection_id])
        member = f"{user}{SEPARATOR}{connection_id}"
        _discard(self._rooms, room, member)
        return ("room_leave", self.room_keys(room), [member])

    async def claim(self, keys: Sequence[str], connection_id: str) -> bool:
        holder, claim_keys = self._holder(connection_id), [self.claim_key(k) for k in keys]
        taken = await self._read("claim", claim_keys, holder, self.claim_ttl_ms)
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
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await self._written.wait()
                await self._call("release", claim_keys, [holder])
        except UNAVAILABLE as error:
            log.debug("claim release deferred to expiry: %s", error)

    async def online(self, room: str) -> list[str]:
        return _names(await self._read("room_members", self.room_keys(room)))

    async def snapshot(self, room: str, limit: int) -> tuple[Headcount, list[str]]:
        count, names = _headcount(
            await self._read("room_snapshot", self.room_keys(room), max(limit, 0))
        )
        return count, _names(names)

    async def rooms(self) -> list[tuple[str, int]]:
        """``SCAN`` over the rooms' connection keys (O(keys in Redis): an operator's call, not
        a hot path), then each room's count in one pipeline."""
        if self._client is None:
            raise BrokerUnavailable("presence not started")
        head = self.room_keys("")[0].removesuffix("{}")
        try:
            keys = [
                bytes(key).decode()
                async for key in self._client.scan_iter(f"{_glob_escape(head)}{{*}}", 1000)
            ]
            rooms = sorted({key[len(head) + 1 : -1] for key in keys})
            calls: list[Call] = [("room_snapshot", self.room_keys(room), [0]) for room in rooms]
            results = await self._run(calls)
        except UNAVAILABLE as error:
            raise BrokerUnavailable(f"presence: {error}") from error
        counts = [(room, int(result[0])) for room, result in zip(rooms, results, strict=True)]
        return [(room, count) for room, count in counts if count]

    async def connections_of(self, user: str) -> int:
        return int(await self._read("connections_count", [self.user_key(user)]))

    async def _read(self, script: str, keys: list[str], *args: Any) -> Any:
        """One script call (one round trip: ``EVALSHA``, loading the script if Redis lacks it)."""
        if self._client is None:
            raise BrokerUnavailable("presence not started")
        try:
            return await self._call(script, keys, list(args))
        except UNAVAILABLE as error:
            raise BrokerUnavailable(f"presence: {error}") from error

    async def _call(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """One script call, in one pipeline with this worker's others issued meanwhile (a
        cluster: one call each, as its pipelines are split by shard anyway)."""
        if self._pipeliner is None:
            return await self._scripts[script](keys=keys, args=args)
        sha = self._scripts[script].sha
        return await self._pipeliner.call("EVALSHA", sha, len(keys), *keys, *args)

    async def _write(
        self,
        rooms: dict[str, set[str]],
        connections: dict[str, set[str]],
        claims: dict[str, str] | None = None,
    ) -> None:
        """Score the entries (and renew the claims) with a fresh expiry, in one pipeline; a
        failure waits for the next refresh."""
        calls: list[Call] = [
            ("room_write", self.room_keys(room), [self.ttl_ms, *chunk])
            for room, members in rooms.items()
            for chunk in _chunked(members)
        ]
        for user, ids in connections.items():
            calls.append(("connections_write", [self.user_key(user)], [self.ttl_ms, *ids]))
        entries = len(calls)
        for keys, holders in _chunks(claims or {}):
            calls.append(("renew", keys, [self.claim_ttl_ms, *holders]))
        if self._client is None or not calls:
            return
        try:
            results = await self._run(calls)
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
        lost = sum(int(result) for result in results[entries:])
        if lost:
            log.warning("%d client id claims were taken over after expiring unrenewed", lost)

    async def _run(self, calls: list[Call]) -> list[Any]:
        """Script calls in one pipeline. A cluster's pipeline does not load scripts as a plain
        one does: on ``NOSCRIPT`` load them on every primary (a new or restarted one has none)
        and run once more."""
        try:
            return await self._pipelined(calls)
        except NoScriptError:
            for script in self._scripts.values():
                await self._client.script_load(script.script)
            return await self._pipelined(calls)

    async def _pipelined(self, calls: list[Call]) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for name, keys, args in calls:
                await self._scripts[name](keys=keys, args=args, client=pipe)
            return list(await pipe.execute())

    async def refresh(self) -> None:
        """Rewrite this worker's entries and renew its claims, as they are now."""
        async with self._turn:
            rooms = {room: set(members) for room, members in self._rooms.items()}
            connections = {user: set(ids) for user, ids in self._connections.items()}
            self._written.clear()
            try:
                await self._write(rooms, connections, dict(self._claims))
            finally:
                self._written.set()

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            stale = time.monotonic() - NAMES_FRESH
            self._lists = {room: kept for room, kept in self._lists.items() if kept[0] > stale}
            await self.refresh()


def _headcount(snapshot: list[Any]) -> tuple[Headcount, Any]:
    """A ``room_snapshot`` result: the count (with when it was read) and the raw names."""
    count, names, counted_at = snapshot
    return Headcount(count, counted_at), names


def _names(raw: Iterable[Any]) -> list[str]:
    """Names as Redis ordered them: by their UTF-8 bytes, which is code point order, Python's."""
    return [bytes(name).decode() for name in raw]


def _discard(entries: dict[str, set[str]], key: str, item: str) -> None:
    items = entries.get(key)
    if items is not None:
        items.discard(item)
        if not items:
            del entries[key]


def _chunked(items: Iterable[str]) -> Iterator[list[str]]:
    every = list(items)
    for first in range(0, len(every), CHUNK):
        yield every[first : first + CHUNK]


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
