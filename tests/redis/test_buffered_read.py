"""The Redis broker's pub/sub reader takes what its connection already read in bulk: in order,
in one tick, without a ``get_message`` call per publication."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
from redis.asyncio.client import PubSub

from gateway.broker import Envelope, room_channel
from gateway.broker.redis import HISTORY_TTL, PUBLISH_SCRIPT
from tests.redis.conftest import StartBroker
from tests.support.fakes import message
from tests.support.servers import scaled

pytestmark = pytest.mark.redis


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
    start_broker: StartBroker, redis_url: str, reads: list[int]
) -> None:
    """While the reader delivers one message, 50 more are published (from a blocking client:
    this worker's loop is busy meanwhile). They wait on the pub/sub socket and come out in the
    next tick, in id order, from a handful of reads rather than one each (a read per message costs
    ~15x the parse)."""
    ticks = Ticks(expected=51)
    broker = await start_broker(redis_url, ticks)
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
    # One tick as a rule; a loaded host may hand the socket's data over in two reads.
    ticks_used = {tick for _, tick in burst}
    assert min(ticks_used) == first_tick + 1
    assert len(ticks_used) <= 2, f"50 publications over {len(ticks_used)} ticks"
    reads_during = reads[0]
    assert reads_during < 25, f"{reads_during} get_message calls for 51 messages"
