"""The Redis backends as several workers see them, and through Redis outages.

Each broker or presence object here stands for one worker; the outage tests run a private
redis-server and stop it, kill its connections or restart it empty.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.broker import BrokerUnavailable, room_channel
from gateway.broker.redis import POOL_SIZE, POOL_TIMEOUT, RedisBroker, connection_pool, split_url
from gateway.presence.redis import RedisPresence
from gateway.ratelimit import message_limiter
from gateway.settings import RateLimit
from tests.support.fakes import Inbox, message
from tests.support.redis import RedisServer
from tests.support.servers import scaled

pytestmark = pytest.mark.redis


class Workers:
    """Brokers and presences on one URL, closed at the end of the test."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.closers: list[Callable[[], Awaitable[None]]] = []

    async def broker(self, inbox: Inbox | None = None, history_size: int = 100) -> RedisBroker:
        broker = RedisBroker(self.url, inbox or Inbox(), history_size)
        await broker.start()
        self.closers.append(broker.aclose)
        return broker

    async def presence(self, ttl: float = 15.0) -> RedisPresence:
        presence = RedisPresence(self.url, ttl)
        await presence.start()
        self.closers.append(presence.aclose)
        return presence

    async def close(self) -> None:
        for close in reversed(self.closers):
            await close()


@pytest.fixture
async def workers(redis_url: str) -> AsyncIterator[Workers]:
    fleet = Workers(redis_url)
    yield fleet
    await fleet.close()


@pytest.fixture
async def own_workers(own_redis: RedisServer) -> AsyncIterator[Workers]:
    fleet = Workers(f"{own_redis.url}?prefix=outage")
    yield fleet
    await fleet.close()


async def eventually(predicate: Callable[[], Any], seconds: float, what: str) -> None:
    """Poll ``predicate`` (sync or async) with a deadline, letting the event loop run."""
    deadline = time.monotonic() + scaled(seconds)
    while not await _call(predicate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {seconds}s for {what}")
        await asyncio.sleep(0.05)


async def _call(predicate: Callable[[], Any]) -> bool:
    result = predicate()
    if asyncio.iscoroutine(result):
        result = await result
    return bool(result)


def test_url_prefix_is_taken_out_of_the_redis_url() -> None:
    assert split_url("redis://h:1/2?prefix=p&socket_timeout=3") == (
        "redis://h:1/2?socket_timeout=3",
        "p",
    )
    assert split_url("redis://h:1/0") == ("redis://h:1/0", "gateway")


def test_pools_are_bounded_and_blocking_and_the_url_may_resize_them() -> None:
    pool = connection_pool("redis://h:1/0", retries=1)
    assert isinstance(pool, aioredis.BlockingConnectionPool)
    assert (pool.max_connections, pool.timeout) == (POOL_SIZE, POOL_TIMEOUT)
    pool = connection_pool("redis://h:1/0?max_connections=7&timeout=1.5", retries=1)
    assert (pool.max_connections, pool.timeout) == (7, 1.5)


async def test_more_commands_in_flight_than_pooled_connections_wait_their_turn(
    workers: Workers, redis_url: str
) -> None:
    """Two connections, 200 concurrent reads and writes: none fails (the old pool raised
    ``Too many connections`` for every command beyond its limit)."""
    workers.url = f"{redis_url}&max_connections=2"
    presence = await workers.presence()
    for n in range(100):
        await presence.add("busy", f"user{n}", f"c{n}")

    results = await asyncio.gather(
        *(presence.online("busy") for _ in range(100)),
        *(presence.connections_of(f"user{n}") for n in range(100)),
    )
    assert results[:100] == [sorted(f"user{n}" for n in range(100))] * 100
    assert results[100:] == [0] * 100
    assert presence._client.connection_pool.max_connections == 2


# Several workers, one Redis


async def test_ids_are_ordered_across_workers(workers: Workers) -> None:
    inboxes = [Inbox(), Inbox()]
    brokers = [await workers.broker(inbox) for inbox in inboxes]
    for broker in brokers:
        await broker.subscribe(room_channel("shared"))

    async def publish_from(broker: RedisBroker, name: str) -> list[int]:
        seqs = []
        for n in range(25):
            seqs.append((await broker.publish(message("shared", f"{name}{n}"), keep=True)).seq)
        return seqs

    a_seqs, b_seqs = await asyncio.gather(
        publish_from(brokers[0], "a"), publish_from(brokers[1], "b")
    )
    assert a_seqs == sorted(a_seqs)
    assert b_seqs == sorted(b_seqs)
    every = sorted(a_seqs + b_seqs)
    assert len(set(every)) == 50
    assert every == list(range(every[0], every[0] + 50)), "one sequence, no holes"
    for inbox in inboxes:
        heard = await inbox.take(50)
        assert [e.seq for e in heard] == every
    history = await brokers[1].history(room_channel("shared"), every[9])
    assert [e.seq for e in history.messages] == every[10:]
    assert history.complete


async def test_presence_is_shared_and_a_dead_workers_entries_expire(workers: Workers) -> None:
    alive = await workers.presence(ttl=1.5)
    crashed = await workers.presence(ttl=1.5)
    await alive.add("lobby", "ann", "a1")
    await crashed.add("lobby", "ghost", "g1")
    await crashed.add("\x00user", "ghost", "g1")
    assert await alive.online("lobby") == ["ann", "ghost"]
    assert await alive.connections_of("ghost") == 1

    # The "crashed" worker stops refreshing without cleaning up, like a kill -9.
    assert crashed._refresher is not None
    crashed._refresher.cancel()
    crashed._rooms.clear()
    crashed._connections.clear()
    died = time.monotonic()
    await eventually(lambda: _online(alive, "lobby", ["ann"]), 5, "the ghost to expire")
    assert time.monotonic() - died <= scaled(1.5 + 1.0)
    assert await alive.connections_of("ghost") == 0
    # ann is refreshed by her live worker, well past the TTL.
    await asyncio.sleep(1.5 * 1.5)  # not a synchronisation: outliving the TTL is the point
    assert await alive.online("lobby") == ["ann"]


async def test_a_dead_workers_connections_leave_the_count_and_names_as_they_expire(
    workers: Workers,
) -> None:
    """Counts and names are kept beside the connections, not read from them: a crashed
    worker's entries must leave them too, and a user with a connection on a live worker stays
    (counted once while both were there)."""
    alive = await workers.presence(ttl=1.5)
    crashed = await workers.presence(ttl=1.5)
    await alive.join("big", "ann", "a1", 10)
    await crashed.join("big", "ann", "g1", 10)
    await crashed.join("big", "ghost", "g2", 10)
    await crashed.join("big", "ghost", "g3", 10)
    await crashed.join("small", "ghost", "g2", 10)
    assert await alive.snapshot("big", 10) == (2, ["ann", "ghost"])
    assert await alive.rooms() == [("big", 2), ("small", 1)]

    assert crashed._refresher is not None
    crashed._refresher.cancel()
    crashed._rooms.clear()

    async def ghost_gone() -> bool:
        return await alive.snapshot("big", 10) == (1, ["ann"])

    await eventually(ghost_gone, 5, "the ghost to expire")
    assert await alive.rooms() == [("big", 1)]
    assert await alive.join("big", "bea", "b1", 10) == (2, ["ann", "bea"])
    assert await alive.leave("big", "ann", "a1") == 1, "ann's other connection died with it"


async def test_joins_into_a_room_larger_than_the_list_reuse_the_list_but_count_exactly(
    workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A storm's joins each read a count, not the same names again; a room back within the
    limit is listed afresh at once."""
    monkeypatch.setattr("gateway.presence.redis.NAMES_FRESH", 3600.0)
    presence = await workers.presence()
    other = await workers.presence()
    for user in ("bob", "carl", "dan"):
        await other.join("big", user, f"o-{user}", 2)
    assert await presence.join("big", "eve", "e1", 2) == (4, ["bob", "carl"])
    await other.join("big", "abe", "o-abe", 2)
    assert await presence.join("big", "fay", "f1", 2) == (6, ["bob", "carl"]), "the list kept"
    assert await presence.snapshot("big", 2) == (6, ["abe", "bob"]), "the API reads afresh"
    for user in ("abe", "bob", "carl", "dan"):
        await other.leave("big", user, f"o-{user}")
    await presence.leave("big", "fay", "f1")
    assert await presence.join("big", "gus", "g1", 2) == (2, ["eve", "gus"]), "listed afresh"
    assert await presence.join("big", "hal", "h1", 2) == (3, ["eve", "gus"])


async def test_every_count_says_when_redis_read_it_in_the_order_of_the_room(
    workers: Workers,
) -> None:
    """Workers' presence events can cross; the moment each count was read orders them."""
    first, second = await workers.presence(), await workers.presence()
    reads = [
        (await first.join("ordered", "ann", "a1", 10))[0],
        (await second.join("ordered", "bob", "b1", 10))[0],
        (await second.snapshot("ordered", 0))[0],
        await first.leave("ordered", "ann", "a1"),
        await second.leave("ordered", "bob", "b1"),
    ]
    assert reads == [1, 2, 2, 1, 0]
    moments = [count.counted_at for count in reads]
    assert moments == sorted(set(moments)), "strictly increasing"
    assert abs(moments[0] / 1e6 - time.time()) < 60, "microseconds of Redis' clock"


async def test_rate_limit_budget_is_shared_by_workers(redis_url: str) -> None:
    first = message_limiter(RateLimit(3, 60), redis_url)
    second = message_limiter(RateLimit(3, 60), redis_url)
    try:
        allowed = [await first.allow("u"), await second.allow("u"), await first.allow("u")]
        assert allowed == [True] * 3
        assert not await second.allow("u")
        assert not await first.allow("u")
        assert await second.allow("someone-else")
    finally:
        await first.aclose()
        await second.aclose()


# Outages


async def test_broker_through_a_redis_restart(own_redis: RedisServer, own_workers: Workers) -> None:
    """The known failure of peers: a subscription silently lost after a Redis hiccup."""
    inbox = Inbox()
    subscriber = await own_workers.broker(inbox)
    publisher = await own_workers.broker()
    assert subscriber.ready
    assert publisher.ready
    await subscriber.subscribe(room_channel("r"))
    before = await publisher.publish(message("r", "before"), keep=True)
    assert (await inbox.next()).seq == before.seq

    own_redis.stop()
    await eventually(lambda: not subscriber.ready and not publisher.ready, 5, "unready brokers")
    with pytest.raises(BrokerUnavailable):
        await publisher.publish(message("r", "during"), keep=True)
    with pytest.raises(BrokerUnavailable):
        await subscriber.history(room_channel("r"), 0)
    await subscriber.subscribe(room_channel("joined-during-outage"))  # kept, never raises

    own_redis.start()  # empty: no persistence
    await eventually(lambda: subscriber.ready and publisher.ready, 15, "brokers to reconnect")
    after = await publisher.publish(message("r", "after"), keep=True)
    also = await publisher.publish(message("joined-during-outage", "late"), keep=True)
    heard = await inbox.take(2)
    assert [e.event["text"] for e in heard] == ["after", "late"]
    assert after.seq > before.seq, "ids keep growing although Redis lost the room's sequence"
    assert also.seq > 0
    assert inbox.queue.empty()
    history = await subscriber.history(room_channel("r"), before.seq)
    assert [e.seq for e in history.messages] == [after.seq]
    assert not history.complete, "what came between is gone with Redis' data"


async def test_messages_published_while_pubsub_was_down_are_replayed_once(
    own_redis: RedisServer, own_workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = Inbox()
    subscriber = await own_workers.broker(inbox)
    publisher = await own_workers.broker()
    await subscriber.subscribe(room_channel("r"))
    first = await publisher.publish(message("r", "m0"), keep=True)
    assert (await inbox.next()).seq == first.seq

    # Hold the subscriber's reconnect until the test has published: Redis stays up, only the
    # subscriber's pub/sub connection is gone (what a proxy or a network blip does).
    release = asyncio.Event()
    original = subscriber._backoff

    async def held_backoff(attempt: int) -> None:
        await release.wait()
        await original(0)

    monkeypatch.setattr(subscriber, "_backoff", held_backoff)
    admin = aioredis.Redis.from_url(own_redis.url)
    try:
        await admin.client_kill_filter(_type="pubsub")
    finally:
        await admin.aclose()
    await eventually(lambda: not subscriber.ready, 5, "the subscriber to notice")
    missed = [(await publisher.publish(message("r", f"m{n}"), keep=True)).seq for n in (1, 2, 3)]
    release.set()
    await eventually(lambda: subscriber.ready, 10, "the subscriber to reconnect")
    live = await publisher.publish(message("r", "m4"), keep=True)
    heard = await inbox.take(4)
    assert [e.seq for e in heard] == [*missed, live.seq]
    assert [e.event["text"] for e in heard] == ["m1", "m2", "m3", "m4"]
    assert inbox.queue.empty()


async def test_presence_comes_back_after_redis_restarts_empty(
    own_redis: RedisServer, own_workers: Workers
) -> None:
    presence = await own_workers.presence(ttl=1.5)
    await presence.add("lobby", "ann", "c1")
    await presence.add("\x00user", "ann", "c1")
    own_redis.stop()
    with pytest.raises(BrokerUnavailable):
        await presence.online("lobby")
    await presence.add("lobby", "bea", "c2")  # written by the next refresh, never raises
    own_redis.start()
    await eventually(
        lambda: _online(presence, "lobby", ["ann", "bea"]), 10, "presence to be rewritten"
    )
    assert await presence.connections_of("ann") == 1


async def _online(presence: RedisPresence, room: str, expected: list[str]) -> bool:
    try:
        return await presence.online(room) == expected
    except BrokerUnavailable:
        return False


async def test_rate_limiter_lets_messages_through_while_redis_is_down(
    own_redis: RedisServer,
) -> None:
    limiter = message_limiter(RateLimit(1, 60), own_redis.url)
    try:
        assert await limiter.allow("u")
        assert not await limiter.allow("u")
        own_redis.stop()
        started = time.monotonic()
        assert await limiter.allow("u"), "the publish after it reports the outage to the client"
        assert time.monotonic() - started < scaled(3)
    finally:
        await limiter.aclose()
