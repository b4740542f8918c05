"""The Redis fleet tests (fan-out, presence, direct messages, kill -9 of a worker) on a 2-worker
fleet whose broker is a 3-master Redis Cluster: room fan-out over sharded pub/sub, direct
messages on their own shard, presence and the rate limit spread over the shards; and resume
after a disconnect, across workers."""

import pytest

from tests.redis.fleet import ROOM, ChatClient, spread_clients
from tests.redis.scenarios import (
    a_killed_worker_is_replaced_and_its_users_age_out,
    assert_in_order_exactly_once,
    close_all,
    everyone_has,
    fanout_presence_and_direct_messages_cross_workers,
)
from tests.support.servers import GatewayProcess

pytestmark = pytest.mark.redis


async def test_resume_across_workers_after_a_disconnect(fleet: GatewayProcess) -> None:
    """A client that drops out and comes back (to whichever worker) resumes from the newest id
    it holds: the missed messages, once, in order, then live ones."""
    clients = await spread_clients(fleet, 6)
    leaver, *stayers = clients
    try:
        for n in range(3):
            await stayers[0].say(f"before-{n}")
        await everyone_has(clients, 3)
        held = max(leaver.message_ids())
        await leaver.close()
        for n in range(4):
            await stayers[n % 2].say(f"missed-{n}")
        await everyone_has(stayers, 7)
        back = await ChatClient.open(fleet, leaver.name)
        stayers.append(back)
        await back.send({"type": "resume", "room": ROOM, "after": str(held)})
        await back.wait(lambda events: any(e["type"] == "resumed" for e in events), 10, "resumed")
        await stayers[1].say("live")
        await back.wait(lambda events: any(e.get("text") == "live" for e in events), 10, "live")
        texts = [e["text"] for e in back.messages()]
        assert sorted(texts[:4]) == [f"missed-{n}" for n in range(4)]
        assert texts[4:] == ["live"]
        assert_in_order_exactly_once(back)
        await stayers[0].wait_messages(8)
        assert back.message_ids() == stayers[0].message_ids()[3:]
    finally:
        await close_all(stayers)


async def test_a_killed_worker_is_replaced_and_its_users_age_out(fleet: GatewayProcess) -> None:
    await a_killed_worker_is_replaced_and_its_users_age_out(fleet)


async def test_fanout_presence_and_direct_messages_cross_workers(fleet: GatewayProcess) -> None:
    await fanout_presence_and_direct_messages_cross_workers(fleet)
