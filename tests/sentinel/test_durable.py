"""The store / WAIT / commit protocol of ``GATEWAY_BROKER_MIN_REPLICAS`` where a publisher fails
between the steps (gateway.broker.durable), on a real Sentinel topology.

A publisher that dies after storing leaves an orphan: readers must not show it, later messages
must not overtake it, and the next confirmed publisher must publish it (its WAIT covered the
orphan) once it is stale, in id order.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.broker import room_channel
from gateway.broker.durable import DurablePublisher
from gateway.broker.redis import HISTORY_TTL, RedisBroker
from tests.support.fakes import Inbox, message
from tests.support.servers import poll_until
from tests.support.topology import SentinelTopology

pytestmark = pytest.mark.redis
TOKEN = "crashed-publisher"


@pytest.fixture
async def brokers(sentinel: SentinelTopology) -> AsyncIterator[tuple[RedisBroker, Inbox]]:
    inbox = Inbox()
    broker = RedisBroker(sentinel.url(f"test-{uuid.uuid4().hex[:12]}"), inbox, 50, min_replicas=1)
    await broker.start()
    try:
        yield broker, inbox
    finally:
        await broker.aclose()


async def store_only(broker: RedisBroker, room: str, text: str) -> int:
    """What a publisher that crashed right after its store leaves behind."""
    assert broker._commands is not None
    publisher = DurablePublisher(broker._commands, 1, broker.history_size, HISTORY_TTL)
    seq, confirmed = await publisher._store_and_wait(
        broker.durable_keys(room_channel(room)), message(room, text).dumps(), TOKEN
    )
    assert confirmed >= 1
    return seq


async def test_an_orphan_is_hidden_then_published_in_order(
    brokers: tuple[RedisBroker, Inbox], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker, inbox = brokers
    monkeypatch.setattr("gateway.broker.durable.STALE", 0.3)
    channel = room_channel("r")
    await broker.subscribe(channel)
    first = await broker.publish(message("r", "first"), keep=True)
    orphan = await store_only(broker, "r", "orphan")
    assert orphan == first.seq + 1

    # Readers stop at the newest published id: the orphan is nobody's yet.
    assert await broker.last_id(channel) == first.seq
    assert [e.seq for e in (await broker.history(channel, 0)).messages] == [first.seq]

    # A confirmed message behind it is acknowledged at once, but not heard before the orphan.
    after = await broker.publish(message("r", "after"), keep=True)
    assert after.seq == orphan + 1
    heard = [(await inbox.next()).event["text"]]
    await poll_until(lambda: inbox.queue.qsize() >= 2, 10, "the orphan and its successor")
    heard += [(await inbox.next()).event["text"] for _ in range(2)]
    assert heard == ["first", "orphan", "after"]
    assert await broker.last_id(channel) == after.seq
    history = await broker.history(channel, 0)
    assert [e.event["text"] for e in history.messages] == ["first", "orphan", "after"]
    assert history.complete


async def test_a_withdrawn_id_is_skipped_and_never_shown(
    brokers: tuple[RedisBroker, Inbox],
) -> None:
    broker, inbox = brokers
    channel = room_channel("w")
    await broker.subscribe(channel)
    first = await broker.publish(message("w", "first"), keep=True)
    refused = await store_only(broker, "w", "refused")
    assert broker._durable is not None
    keys, topic = broker.durable_keys(channel), broker.topic(channel)
    assert await broker._durable.advance(keys, topic, refused, "ok", "another's") == (
        "gone",
        first.seq,
        first.seq,
    ), "not the caller's message: left alone"
    state, committed, published = await broker._durable.advance(
        keys, topic, refused, "withdraw", TOKEN
    )
    assert (state, committed, published) == ("withdrawn", refused, first.seq)
    after = await broker.publish(message("w", "after"), keep=True)
    assert after.seq == refused + 1
    assert [e.event["text"] for e in await inbox.take(2)] == ["first", "after"]
    history = await broker.history(channel, 0)
    assert [e.event["text"] for e in history.messages] == ["first", "after"]
    assert (await broker.history(channel, first.seq)).complete
