"""Client id claims and presence entries in Redis as the workers of a fleet write them: atomic
claims, renewal, and a refresh racing a removal (SPEC "Hardening": "One id, one connection")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.presence import USER_ROOM
from gateway.presence.redis import RedisPresence
from tests.support.servers import scaled

pytestmark = pytest.mark.redis


@pytest.fixture
async def workers(redis_url: str) -> AsyncIterator[Callable[[], Awaitable[RedisPresence]]]:
    """Presences standing for workers of one fleet (one Redis, one prefix)."""
    started: list[RedisPresence] = []

    async def worker() -> RedisPresence:
        presence = RedisPresence(redis_url, ttl=15.0, claim_ttl=20.0)
        await presence.start()
        started.append(presence)
        return presence

    yield worker
    for presence in started:
        await presence.aclose()


async def test_simultaneous_claims_on_two_workers_take_one(
    workers: Callable[[], Awaitable[RedisPresence]],
) -> None:
    one, two = await workers(), await workers()
    both = []
    for n in range(40):
        keys = [f"user{n}", f"USER{n}"]
        results = await asyncio.gather(one.claim(keys, "c1"), two.claim(keys[::-1], "c1"))
        if all(results):
            both.append(n)
        assert any(results)
    assert both == []


async def test_a_claim_is_only_released_by_its_holder(
    workers: Callable[[], Awaitable[RedisPresence]],
) -> None:
    one, two = await workers(), await workers()
    assert await one.claim(["bob"], "c1")
    await two.release(["bob"], "c1")  # same connection id, other worker: not the holder
    assert not await two.claim(["bob"], "c2")
    await one.release(["bob"], "c1")
    assert await two.claim(["bob"], "c2")


async def test_a_refresh_restores_a_claim_redis_lost(
    workers: Callable[[], Awaitable[RedisPresence]], redis_url: str
) -> None:
    one, two = await workers(), await workers()
    assert await one.claim(["carol"], "c1")
    client = aioredis.Redis.from_url(redis_url.partition("?")[0])
    try:
        assert await client.delete(one.claim_key("carol")) == 1
        await one.refresh()
        ttl = await client.pttl(one.claim_key("carol"))
    finally:
        await client.aclose()
    assert 0 < ttl <= one.claim_ttl_ms
    assert not await two.claim(["carol"], "c9")


async def test_a_refresh_in_flight_does_not_bring_back_a_removed_entry(
    workers: Callable[[], Awaitable[RedisPresence]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refresh snapshots the entries, then its write is held back while the connection
    leaves; released after the removal, it must not write the entry back."""
    presence = await workers()
    await presence.add(USER_ROOM, "dave", "c1")
    assert await presence.connections_of("dave") == 1
    gate = asyncio.Event()
    write = presence._write

    async def held_write(*args: Any, **kwargs: Any) -> None:
        await gate.wait()
        await write(*args, **kwargs)

    monkeypatch.setattr(presence, "_write", held_write)
    refreshing = asyncio.create_task(presence.refresh())
    removing = asyncio.create_task(presence.remove(USER_ROOM, "dave", "c1"))
    await asyncio.wait([removing], timeout=scaled(0.5))  # done at once unless it waits its turn
    gate.set()
    async with asyncio.timeout(scaled(10)):
        await asyncio.gather(refreshing, removing)
    assert await presence.connections_of("dave") == 0


async def test_removals_wait_for_a_refresh_but_not_for_each_other(
    workers: Callable[[], Awaitable[RedisPresence]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drain removes thousands of entries at once: held behind each other, they took one
    Redis round trip each, in turn, and a 10,000-member room did not drain in 25 s."""
    presence = await workers()
    for n in range(3):
        await presence.add("lobby", f"u{n}", f"c{n}")
    gate, entered = asyncio.Event(), asyncio.Event()
    inside = 0
    call = presence._call

    async def held(script: str, keys: list[str], args: list[Any]) -> Any:
        nonlocal inside
        if script == "room_leave":
            inside += 1
            if inside == 3:
                entered.set()
            await gate.wait()
        return await call(script, keys, args)

    monkeypatch.setattr(presence, "_call", held)
    removing = [asyncio.create_task(presence.remove("lobby", f"u{n}", f"c{n}")) for n in range(3)]
    try:
        async with asyncio.timeout(scaled(5)):
            await entered.wait()
    finally:
        gate.set()
    async with asyncio.timeout(scaled(10)):
        await asyncio.gather(*removing)
    assert await presence.online("lobby") == []
