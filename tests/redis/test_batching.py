"""The Redis broker's bulk paths: a tick's publishes as one pipeline, the pub/sub read in bulk.

Each test checks that the batching happened (one pipeline, one tick, few reads) and that
nothing else changed: every caller its own id or error, ids and delivery in issue order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from redis.asyncio.client import PubSub
from redis.exceptions import ResponseError

from gateway.broker import Envelope, room_channel
from gateway.broker.batching import PublishPipeline
from gateway.broker.redis import HISTORY_TTL, PUBLISH_SCRIPT, RedisBroker
from tests.support.fakes import Inbox, message
from tests.support.redis import RedisServer
from tests.support.servers import scaled

pytestmark = pytest.mark.redis


@pytest.fixture
async def brokers() -> AsyncIterator[list[RedisBroker]]:
    """Close what the test started (each broker stands for one worker)."""
    started: list[RedisBroker] = []
    yield started
    for broker in reversed(started):
        await broker.aclose()


async def start(brokers: list[RedisBroker], url: str, deliver: Any) -> RedisBroker:
    broker = RedisBroker(url, deliver, 100)
    await broker.start()
    brokers.append(broker)
    return broker


@pytest.fixture
def pipelines(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every pipeline the brokers send."""
    sizes: list[int] = []
    execute = PublishPipeline._execute

    async def counted(self: PublishPipeline, commands: list[Any]) -> list[Any]:
        sizes.append(len(commands))
        return await execute(self, commands)

    monkeypatch.setattr(PublishPipeline, "_execute", counted)
    return sizes


async def test_one_ticks_publishes_go_as_one_pipeline_each_with_its_own_id_in_order(
    brokers: list[RedisBroker], redis_url: str, pipelines: list[int]
) -> None:
    inbox = Inbox()
    broker = await start(brokers, redis_url, inbox)
    await broker.subscribe(room_channel("batch"))
    pipelines.clear()

    published = await asyncio.gather(
        *(broker.publish(message("batch", f"m{n}"), keep=True) for n in range(20)),
        broker.publish(message("batch", "not kept"), keep=False),
    )

    assert pipelines == [21]
    seqs = [envelope.seq for envelope in published[:20]]
    assert seqs == list(range(seqs[0], seqs[0] + 20)), "ids follow the order of the calls"
    assert [envelope.event["id"] for envelope in published[:20]] == [str(s) for s in seqs]
    heard = await inbox.take(21)
    assert [envelope.event["text"] for envelope in heard] == [
        *(f"m{n}" for n in range(20)),
        "not kept",
    ]
    assert [envelope.seq for envelope in heard[:20]] == seqs
    history = await broker.history(room_channel("batch"), 0)
    assert [envelope.seq for envelope in history.messages] == seqs


async def test_a_publish_failing_inside_a_pipeline_fails_only_its_caller(
    brokers: list[RedisBroker], redis_url: str, pipelines: list[int]
) -> None:
    inbox = Inbox()
    broker = await start(brokers, redis_url, inbox)
    await broker.subscribe(room_channel("fine"))
    meta, _ = broker.keys(room_channel("broken"))
    assert broker._commands is not None
    await broker._commands.set(meta, "not a hash")  # the script's HINCRBY fails on it
    pipelines.clear()

    first, broken, last = await asyncio.gather(
        broker.publish(message("fine", "first"), keep=True),
        broker.publish(message("broken", "lost"), keep=True),
        broker.publish(message("fine", "last"), keep=True),
        return_exceptions=True,
    )

    assert pipelines == [3]
    assert isinstance(broken, ResponseError)
    assert isinstance(first, Envelope)
    assert isinstance(last, Envelope)
    assert last.seq == first.seq + 1
    assert [e.event["text"] for e in await inbox.take(2)] == ["first", "last"]


async def test_a_pipeline_reloads_a_script_redis_lost_and_runs_those_publishes_once(
    brokers: list[RedisBroker], own_redis: RedisServer, pipelines: list[int]
) -> None:
    """On a private Redis: flushing the shared one's scripts would disturb other tests."""
    inbox = Inbox()
    broker = await start(brokers, f"{own_redis.url}?prefix=flushed", inbox)
    await broker.subscribe(room_channel("flushed"))
    assert broker._commands is not None
    await broker._commands.script_flush()
    pipelines.clear()

    published = await asyncio.gather(
        *(broker.publish(message("flushed", f"m{n}"), keep=True) for n in range(3))
    )

    assert pipelines == [3, 3], "NOSCRIPT for all three, then all three again"
    seqs = [envelope.seq for envelope in published]
    assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]
    heard = await inbox.take(3)
    assert [envelope.seq for envelope in heard] == seqs
    assert inbox.queue.empty()


class Ticks:
    """Which loop tick each delivery happened in: a callback scheduled by the first delivery
    of a tick runs once the reader yields, and closes that tick."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.all_seen = asyncio.Event()
        self.current = 0
        self.open = False
        self.seen: list[tuple[int, int]] = []
        """(id, tick) of every delivery."""
        self.on_first: list[Any] = []

    def __call__(self, envelope: Envelope) -> None:
        if not self.open:
            self.open = True
            asyncio.get_running_loop().call_soon(self._close)
        self.seen.append((envelope.seq, self.current))
        if len(self.seen) == self.expected:
            self.all_seen.set()
        if len(self.seen) == 1:
            for action in self.on_first:
                action(envelope)

    def _close(self) -> None:
        self.open = False
        self.current += 1


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the pub/sub connection was read with ``get_message``."""
    count = [0]
    get_message = PubSub.get_message

    async def counted(self: PubSub, *args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return await get_message(self, *args, **kwargs)

    monkeypatch.setattr(PubSub, "get_message", counted)
    return count


async def test_a_burst_waiting_on_the_socket_is_delivered_in_order_in_one_tick(
    brokers: list[RedisBroker], redis_url: str, reads: list[int]
) -> None:
    """While the reader delivers one message, 50 more are published (from a blocking client:
    this worker's loop is busy meanwhile). They wait on the pub/sub socket and come out in one
    tick, in id order, from a handful of reads rather than one each (a read per message costs
    ~15x the parse)."""
    ticks = Ticks(expected=51)
    broker = await start(brokers, redis_url, ticks)
    channel = room_channel("burst")
    await broker.subscribe(channel)
    publisher = redis.Redis.from_url(broker.url)
    script = publisher.register_script(PUBLISH_SCRIPT)
    keys = list(broker.keys(channel))

    def publish_burst(first: Envelope) -> None:
        """One pipeline: Redis runs it in one go and writes the 50 to a subscriber at once
        (sent one by one, a loaded host may still be delivering the last ones on loopback
        when the worker reads, and they would come a tick later)."""
        with publisher.pipeline(transaction=False) as pipe:
            for n in range(50):
                payload = message("burst", f"b{n}").dumps()
                args: list[str | int] = [broker.topic(channel), payload, 100, HISTORY_TTL]
                script(keys=keys, args=args, client=pipe)
            pipe.execute()

    ticks.on_first.append(publish_burst)
    try:
        await broker.publish(message("burst", "first"), keep=True)
        async with asyncio.timeout(scaled(5)):
            await ticks.all_seen.wait()
    finally:
        publisher.close()

    first_seq, first_tick = ticks.seen[0]
    burst = ticks.seen[1:]
    assert [seq for seq, _ in burst] == list(range(first_seq + 1, first_seq + 51))
    assert {tick for _, tick in burst} == {first_tick + 1}, "all 50 in one tick"
    reads_during = reads[0]
    assert reads_during < 25, f"{reads_during} get_message calls for 51 messages"
