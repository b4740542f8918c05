"""What Redis Cluster adds: rooms spread over the shards, a room's traffic on its own shard only,
a subscription that follows its room when the slot is resharded, and one rate-limit budget
across workers, on a real 3-master cluster."""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
import redis

from gateway.broker import Broker, create_broker, room_channel
from gateway.ratelimit import message_limiter
from gateway.settings import RateLimit
from tests.support.fakes import Inbox, message
from tests.support.servers import poll_until
from tests.support.topology import HOST, ClusterTopology, move_slot

pytestmark = pytest.mark.redis


@pytest.fixture
def url(cluster: ClusterTopology) -> str:
    return cluster.url(f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as closing:
        yield closing


async def started(url: str, stack: AsyncExitStack, inbox: Inbox | None = None) -> Broker:
    broker = create_broker(url, inbox or Inbox(), 100)
    await broker.start()
    stack.push_async_callback(broker.aclose)
    assert broker.ready
    return broker


def node_stats(cluster: ClusterTopology) -> dict[int, int]:
    """SPUBLISH calls so far, per node (scripted calls count too)."""
    counts = {}
    for node in cluster.nodes:
        with redis.Redis(HOST, node.port, decode_responses=True) as conn:
            stats = conn.info("commandstats").get("cmdstat_spublish", {})
            counts[node.port] = int(stats.get("calls", 0)) if isinstance(stats, dict) else 0
    return counts


def owner(cluster: ClusterTopology, key: str) -> int:
    with redis.Redis(HOST, cluster.nodes[0].port, decode_responses=True) as conn:
        slot = int(conn.execute_command("CLUSTER", "KEYSLOT", key))
        for shard in conn.execute_command("CLUSTER", "SLOTS"):
            if int(shard[0]) <= slot <= int(shard[1]):
                return int(shard[2][1])
    raise AssertionError(f"no owner for {key}")


async def test_rooms_spread_and_each_room_touches_only_its_shard(
    cluster: ClusterTopology, url: str, stack: AsyncExitStack
) -> None:
    inbox = Inbox()
    broker = await started(url, stack, inbox)
    rooms = [f"room{n}" for n in range(24)]
    for room in rooms:
        await broker.subscribe(room_channel(room))
    owners = {room: owner(cluster, broker.topic(room_channel(room))) for room in rooms}  # type: ignore[attr-defined]
    assert set(owners.values()) == {node.port for node in cluster.nodes}, "rooms on every shard"
    for room in rooms[:6]:
        before = node_stats(cluster)
        for n in range(5):
            await broker.publish(message(room, f"{room}-{n}"), keep=True)
        after = node_stats(cluster)
        moved = {port: after[port] - before[port] for port in after}
        assert moved == {port: 5 if port == owners[room] else 0 for port in moved}, room
        heard = await inbox.take(5)
        assert [e.event["text"] for e in heard] == [f"{room}-{n}" for n in range(5)]


async def test_a_subscription_follows_its_room_to_another_shard(
    cluster: ClusterTopology, url: str, stack: AsyncExitStack
) -> None:
    inbox = Inbox()
    listener = await started(url, stack, inbox)
    publisher = await started(url, stack)
    channel = room_channel("moving")
    await listener.subscribe(channel)
    first = await publisher.publish(message("moving", "before"), keep=True)
    assert (await inbox.next()).event["text"] == "before"

    topic = listener.topic(channel)  # type: ignore[attr-defined]
    source_port = owner(cluster, topic)
    target = next(node for node in cluster.nodes if node.port != source_port)
    with redis.Redis(HOST, target.port, decode_responses=True) as conn:
        slot = int(conn.execute_command("CLUSTER", "KEYSLOT", topic))
    move_slot(cluster, slot, target)
    assert owner(cluster, topic) == target.port

    # The publisher follows MOVED; the listener is dropped by the old owner and resubscribes
    # on the new one, replaying what it missed meanwhile; ids go on from the moved sequence.
    await poll_until(lambda: listener.ready, 10, "the listener to be ready again")
    texts = [f"after-{n}" for n in range(5)]
    seqs = [(await publisher.publish(message("moving", text), keep=True)).seq for text in texts]
    assert seqs[0] == first.seq + 1
    heard = await inbox.take(5, seconds=15)
    assert [e.event["text"] for e in heard] == texts
    assert [e.seq for e in heard] == seqs


async def test_the_rate_limit_is_one_budget_across_workers(url: str) -> None:
    workers = [message_limiter(RateLimit(3, 60), url) for _ in range(2)]
    try:
        allowed = [await workers[n % 2].allow("alice") for n in range(5)]
        assert allowed == [True, True, True, False, False]
        assert await workers[0].allow("bob")
    finally:
        for limiter in workers:
            await limiter.aclose()


async def test_a_frozen_shard_makes_the_broker_unready_until_it_answers(
    cluster: ClusterTopology, url: str, stack: AsyncExitStack
) -> None:
    inbox = Inbox()
    broker = await started(url, stack, inbox)
    await broker.subscribe(room_channel("r"))
    frozen = cluster.nodes[1]
    frozen.signal(signal.SIGSTOP)
    try:
        await poll_until(lambda: not broker.ready, 10, "the broker to notice the frozen shard")
    finally:
        frozen.signal(signal.SIGCONT)
    await poll_until(lambda: broker.ready, 20, "the broker to be ready again")
    published = await broker.publish(message("r", "back"), keep=True)
    heard = await inbox.next(10)
    assert (heard.seq, heard.event["text"]) == (published.seq, "back")
