"""Fleet scenarios every Redis topology runs (one Redis, Sentinel, Cluster): each topology's
test module calls them with its own two-worker fleet."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
from websockets.asyncio.client import connect

from tests.redis.fleet import (
    MAX_FRAME,
    PRESENCE_TTL,
    ROOM,
    ChatClient,
    spread_clients,
)
from tests.support.fleet import worker_pids
from tests.support.servers import GatewayProcess, scaled, wait_until


def presence_api(server: GatewayProcess) -> list[str]:
    response = server.get(f"/api/rooms/{ROOM}/presence")
    assert response.status_code == 200, response.text
    online: list[str] = response.json()["online"]
    return online


def readiness(server: GatewayProcess) -> int:
    try:
        return server.get("/readyz").status_code
    except httpx.HTTPError:
        return 0


async def close_all(clients: list[ChatClient]) -> None:
    await asyncio.gather(*(client.close() for client in clients))


async def everyone_has(clients: list[ChatClient], count: int, seconds: float = 15) -> None:
    await asyncio.gather(*(client.wait_messages(count, seconds) for client in clients))


def assert_in_order_exactly_once(client: ChatClient) -> None:
    ids = client.message_ids()
    assert ids == sorted(ids), f"{client.name} got ids out of order: {ids}"
    assert len(set(ids)) == len(ids), f"{client.name} got a message twice: {ids}"


async def fanout_presence_and_direct_messages_cross_workers(fleet: GatewayProcess) -> None:
    clients = await spread_clients(fleet, 40)
    pids = worker_pids(fleet.pid)
    assert {c.pid for c in clients} == pids
    try:
        # Six senders, three per worker, four messages each, all at once.
        senders = [c for pid in pids for c in [x for x in clients if x.pid == pid][:3]]
        await asyncio.gather(*(s.say(f"{s.name}-{n}") for s in senders for n in range(4)))
        await everyone_has(clients, 24)
        await clients[0].say("last")  # anything duplicated would arrive before it
        await everyone_has(clients, 25)
        expected = sorted([f"{s.name}-{n}" for s in senders for n in range(4)] + ["last"])
        reference = [(e["id"], e["text"]) for e in clients[0].messages()]
        for client in clients:
            assert_in_order_exactly_once(client)
            assert sorted(e["text"] for e in client.messages()) == expected
            assert [(e["id"], e["text"]) for e in client.messages()] == reference

        # Presence: all 40 from either worker (each client asks its own worker) and the API.
        names = sorted(c.name for c in clients)
        for client in clients:
            client.events.clear()
            await client.send({"type": "join", "room": ROOM})
        for client in clients:
            await client.wait(lambda events: any(e["type"] == "joined" for e in events), 10, "ack")
            assert client.of_type("joined")[0]["online"] == names, client.pid
        for _ in range(4):
            assert presence_api(fleet) == names

        # A direct message from a user on one worker to a user on the other, and back.
        alice = next(c for c in clients if c.pid == min(pids))
        bob = next(c for c in clients if c.pid == max(pids))
        await alice.send({"type": "direct", "to": bob.name, "text": "psst"})
        await bob.wait(lambda events: any(e["type"] == "direct" for e in events), 10, "direct")
        assert bob.of_type("direct")[0] | {"ts": 0} == {
            "type": "direct",
            "from": alice.name,
            "to": bob.name,
            "text": "psst",
            "ts": 0,
        }
        await bob.send({"type": "direct", "to": alice.name, "text": "hi back"})
        await alice.wait(
            lambda events: any(e.get("text") == "hi back" for e in events), 10, "direct reply"
        )

        # The worker runs the gateway's uvicorn settings: a frame over the limit gets 1009.
        async with connect(fleet.ws_url("/ws/oversized"), open_timeout=scaled(10)) as ws:
            await ws.send("x" * (MAX_FRAME + 100))
            async with asyncio.timeout(scaled(10)):
                await ws.wait_closed()
            assert ws.protocol.close_rcvd is not None
            assert ws.protocol.close_rcvd.code == 1009
    finally:
        await close_all(clients)


async def a_killed_worker_is_replaced_and_its_users_age_out(fleet: GatewayProcess) -> None:
    clients = await spread_clients(fleet, 40)
    pids = worker_pids(fleet.pid)
    victim = min(pids)
    doomed = [c for c in clients if c.pid == victim]
    survivors = [c for c in clients if c.pid != victim]
    try:
        for client in clients:
            client.events.clear()
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        await asyncio.gather(*(client.wait_closed() for client in doomed))

        # Its users leave presence on their own, within the TTL; the others stay listed.
        expected = sorted(c.name for c in survivors)
        wait_until(lambda: presence_api(fleet) == expected, PRESENCE_TTL + 5, "ghosts to expire")
        assert time.monotonic() - killed_at <= scaled(PRESENCE_TTL + 2)

        # gunicorn replaces the worker.
        wait_until(
            lambda: len(worker_pids(fleet.pid)) == 2 and victim not in worker_pids(fleet.pid),
            20,
            "gunicorn to start a new worker",
        )
        wait_until(lambda: readiness(fleet) == 200, 10, "readiness")

        # The others never noticed: still connected, still chatting, nothing odd received.
        newcomer = await ChatClient.open(fleet, "newcomer")
        clients.append(newcomer)
        survivors.append(newcomer)
        await survivors[0].say("still here")
        await everyone_has(survivors, 1)
        for client in survivors:
            assert not client.closed
            assert [e["text"] for e in client.messages()] == ["still here"]
            assert client.of_type("error") == []
        assert newcomer.of_type("joined")[0]["online"] == sorted(
            [c.name for c in survivors if c is not newcomer] + ["newcomer"]
        )
    finally:
        await close_all(clients)
