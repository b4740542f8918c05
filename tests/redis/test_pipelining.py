"""Publishes (and presence scripts) issued while one is in flight go to Redis as one pipeline.

Each test checks that the pipelining happened and that nothing else changed: every caller its
own id or error, ids and delivery in issue order.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ResponseError

from gateway.broker import Envelope, room_channel
from gateway.broker.pipelining import Pipeliner
from gateway.presence.redis import RedisPresence
from tests.redis.conftest import StartBroker
from tests.support.fakes import Inbox, message
from tests.support.redis import RedisServer

pytestmark = pytest.mark.redis


@pytest.fixture
def pipelines(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every pipeline the brokers send (a publish alone is a pipeline of one)."""
    sizes: list[int] = []
    execute = Pipeliner._execute

    async def counted(self: Pipeliner, commands: list[Any]) -> list[Any]:
        sizes.append(len(commands))
        return await execute(self, commands)

    monkeypatch.setattr(Pipeliner, "_execute", counted)
    return sizes


async def test_publishes_issued_meanwhile_go_as_one_pipeline_each_with_its_own_id_in_order(
    start_broker: StartBroker, redis_url: str, pipelines: list[int]
) -> None:
    inbox = Inbox()
    broker = await start_broker(redis_url, inbox)
    await broker.subscribe(room_channel("batch"))
    pipelines.clear()

    published = await asyncio.gather(
        *(broker.publish(message("batch", f"m{n}"), keep=True) for n in range(20)),
        broker.publish(message("batch", "not kept"), keep=False),
    )

    assert pipelines == [1, 20], "the first at once, the others together once it completed"
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
    start_broker: StartBroker, redis_url: str, pipelines: list[int]
) -> None:
    inbox = Inbox()
    broker = await start_broker(redis_url, inbox)
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

    assert pipelines == [1, 2]
    assert isinstance(broken, ResponseError)
    assert isinstance(first, Envelope)
    assert isinstance(last, Envelope)
    assert last.seq == first.seq + 1
    assert [e.event["text"] for e in await inbox.take(2)] == ["first", "last"]


async def test_a_pipeline_reloads_a_script_redis_lost_and_runs_those_publishes_once(
    start_broker: StartBroker, own_redis: RedisServer, pipelines: list[int]
) -> None:
    """On a private Redis: flushing the shared one's scripts would disturb other tests."""
    inbox = Inbox()
    broker = await start_broker(f"{own_redis.url}?prefix=flushed", inbox)
    await broker.subscribe(room_channel("flushed"))
    assert broker._commands is not None
    await broker._commands.script_flush()
    pipelines.clear()

    published = await asyncio.gather(
        *(broker.publish(message("flushed", f"m{n}"), keep=True) for n in range(3))
    )

    assert pipelines == [1, 1, 2], "NOSCRIPT for the first, it again, then the other two"
    seqs = [envelope.seq for envelope in published]
    assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]
    heard = await inbox.take(3)
    assert [envelope.seq for envelope in heard] == seqs
    assert inbox.queue.empty()


async def test_presence_scripts_issued_meanwhile_go_as_one_pipeline_each_with_its_answer(
    redis_url: str, pipelines: list[int]
) -> None:
    """A reconnect storm's claims, entries and counts: a write and a read per batch, not per
    command, and each caller still gets its own answer, in the order the calls were issued."""
    presence = RedisPresence(redis_url)
    await presence.start()
    try:
        pipelines.clear()
        claims = await asyncio.gather(
            *(presence.claim([f"piped-{n % 10}"], f"c{n}") for n in range(20))
        )
        assert pipelines == [1, 19]
        assert claims == [True] * 10 + [False] * 10, "the first claim of each id wins"

        pipelines.clear()
        joins = await asyncio.gather(
            *(presence.join("piped", f"u{n:02}", f"c{n}", 100) for n in range(20))
        )
        assert pipelines == [1, 19, 20], "the first entry, the other entries, then every count"
        assert [count for count, _ in joins] == [20] * 20
        assert joins[0][1] == [f"u{n:02}" for n in range(20)]
    finally:
        await presence.aclose()  # removes its entries and releases its claims


async def test_presence_writes_queued_when_presence_closes_do_not_raise(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes never raise (their entries expire): a removal still queued behind a pipeline in
    flight when the worker closes presence was failed by the closing pipeliner, and raised out
    of the connection's cleanup."""
    presence = RedisPresence(redis_url)
    await presence.start()
    gate, inside = asyncio.Event(), asyncio.Event()
    execute = Pipeliner._execute

    async def held(self: Pipeliner, commands: list[Any]) -> list[Any]:
        values = await execute(self, commands)  # its connection back in the pool before the close
        inside.set()
        await gate.wait()
        return values

    monkeypatch.setattr(Pipeliner, "_execute", held)
    in_flight = asyncio.create_task(presence.add("closing", "ann", "a1"))
    await asyncio.wait_for(inside.wait(), 5)
    pipeliner = presence._pipeliner
    assert pipeliner is not None
    waiting = asyncio.Event()

    class Waiting(list[Any]):
        def append(self, item: Any) -> None:
            super().append(item)
            waiting.set()

    pipeliner._waiting = Waiting()
    queued = asyncio.create_task(presence.remove("closing", "bob", "b1"))
    await asyncio.wait_for(waiting.wait(), 5)  # the removal waits behind the pipeline in flight
    closing = asyncio.create_task(presence.aclose())
    async with asyncio.timeout(10):
        await queued  # failed by the closing pipeliner: swallowed, as every write's failure
        gate.set()
        await asyncio.gather(in_flight, closing)
