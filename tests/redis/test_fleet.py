"""A real fleet: ``gateway serve --workers 2`` (a gunicorn master, two uvicorn workers) on Redis.

Clients are spread over both workers (checked against the kernel's view of who holds each
socket); the tests then check fan-out, presence, direct messages, a worker killed with -9 and a
Redis restart, all from the clients' side.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.redis.fleet import (
    PRESENCE_TTL,
    ChatClient,
    fleet_env,
    spread_clients,
)
from tests.redis.scenarios import (
    a_killed_worker_is_replaced_and_its_users_age_out,
    assert_in_order_exactly_once,
    close_all,
    everyone_has,
    fanout_presence_and_direct_messages_cross_workers,
    presence_api,
    readiness,
)
from tests.support.fleet import fleet as start_fleet
from tests.support.redis import RedisServer
from tests.support.servers import GatewayProcess, wait_until

pytestmark = pytest.mark.redis


async def test_fanout_presence_and_direct_messages_cross_workers(fleet: GatewayProcess) -> None:
    await fanout_presence_and_direct_messages_cross_workers(fleet)


async def test_a_killed_worker_is_replaced_and_its_users_age_out(fleet: GatewayProcess) -> None:
    await a_killed_worker_is_replaced_and_its_users_age_out(fleet)


async def test_redis_restart_mid_run(own_redis: RedisServer) -> None:
    env = fleet_env(f"{own_redis.url}?prefix=restart")
    with start_fleet(env) as server:
        clients = await spread_clients(server, 10)
        try:
            await _through_a_restart(server, own_redis, clients)
        finally:
            await close_all(clients)


async def _through_a_restart(
    server: GatewayProcess, own_redis: RedisServer, clients: list[ChatClient]
) -> None:
    pids = sorted({c.pid for c in clients if c.pid is not None})
    senders = [next(c for c in clients if c.pid == pid) for pid in pids]
    for sender in senders:
        for n in range(3):
            await sender.say(f"before-{sender.name}-{n}")
    await everyone_has(clients, 6)
    acked = {e["id"] for e in clients[0].messages()}

    own_redis.stop()
    wait_until(lambda: readiness(server) == 503, 10, "/readyz to say 503")
    for sender in senders:  # a publish during the outage is refused out loud
        await sender.say("during the outage")
        await sender.wait(
            lambda events: any(e.get("code") == "unavailable" for e in events), 10, "an error"
        )
    assert all(not c.closed for c in clients)

    own_redis.start()  # without persistence: it comes back empty
    wait_until(lambda: readiness(server) == 200, 20, "/readyz to say 200 again")
    for sender in senders:
        for n in range(3):
            acked.add(await _publish_until_accepted(sender, f"after-{sender.name}-{n}"))

    # Every client resumes after the newest id it holds; then each holds every message
    # published while Redis was up, once, in order.
    for client in clients:
        assert_in_order_exactly_once(client)  # live delivery, before any resume
        last = max(client.message_ids())
        await client.send({"type": "resume", "room": "lobby", "after": str(last)})
    for client in clients:
        await client.wait(lambda events: any(e["type"] == "resumed" for e in events), 10, "resumed")
        await client.wait_holding(acked)
        assert client.held() == acked
    names = sorted(c.name for c in clients)
    wait_until(lambda: presence_api(server) == names, PRESENCE_TTL + 5, "presence rewritten")


async def _publish_until_accepted(sender: ChatClient, text: str, attempts: int = 50) -> str:
    """Send until the sender hears its own message back (an error means: not published)."""
    for _ in range(attempts):
        errors = len(sender.of_type("error"))

        def answered(_: object, errors: int = errors) -> bool:
            echoed = any(e.get("text") == text for e in sender.messages())
            return echoed or len(sender.of_type("error")) > errors

        await sender.say(text)
        await sender.wait(answered, 10, f"{text} or an error")
        echoed = [e for e in sender.messages() if e.get("text") == text]
        if echoed:
            return str(echoed[0]["id"])
        await asyncio.sleep(0.1)  # pacing retries during reconnection, not synchronisation
    raise AssertionError(f"{text} was never accepted")
