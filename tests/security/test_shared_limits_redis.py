"""Per-user limits hold across workers when Redis is the broker: two gateway processes on one
Redis stand for two workers (each connection's worker is then known, not left to the kernel)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import ClientConnection

from tests.security.helpers import REJECTED, SECRET, chat_once, closed_before_any_data, token
from tests.support.clients import of_type, open_ws, recv_until
from tests.support.metrics import metric
from tests.support.servers import GatewayProcess, start_gateway, wait_until

pytestmark = pytest.mark.redis


@pytest.fixture
def pair(redis_url: str) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    env = {
        "GATEWAY_BROKER_URL": redis_url,
        "GATEWAY_AUTH_SECRET": SECRET,
        "GATEWAY_RATE_LIMIT": "3/60",
        "GATEWAY_MAX_CONNECTIONS_PER_USER": "2",
    }
    with start_gateway(env) as first, start_gateway(env) as second:
        yield first, second


def online(server: GatewayProcess, room: str) -> list[str]:
    """With auth on, reading presence takes a token too (SPEC, Hardening: HTTP)."""
    headers = {"Authorization": f"Bearer {token('observer')}"}
    return list(server.get(f"/api/rooms/{room}/presence", headers=headers).json()["online"])


async def joined(server: GatewayProcess, user: str) -> ClientConnection:
    ws = await open_ws(server.ws_url(f"/ws/{user}?token={token(user)}"))
    await recv_until(ws, of_type("joined"))
    return ws


async def test_message_budget_is_shared_by_a_users_connections_on_every_worker(
    pair: tuple[GatewayProcess, GatewayProcess],
) -> None:
    first, second = pair
    here, there = await joined(first, "olga"), await joined(second, "olga")
    await chat_once(here, "one")
    await chat_once(here, "two")
    await chat_once(there, "three")
    await there.send(json.dumps({"type": "message", "text": "four"}))
    error, _ = await recv_until(there, of_type("error"))
    assert error["code"] == "rate_limited"
    assert metric(second.base_url, REJECTED, reason="rate_limited") == 1
    for ws in (here, there):
        await ws.close()


async def test_connection_limit_per_user_counts_every_worker(
    pair: tuple[GatewayProcess, GatewayProcess],
) -> None:
    first, second = pair
    here, there = await joined(first, "pavel"), await joined(second, "pavel")
    wait_until(
        lambda: "pavel" in online(first, "lobby"),
        5,
        "presence of pavel",
    )
    third = await open_ws(first.ws_url(f"/ws/pavel?token={token('pavel')}"))
    assert await closed_before_any_data(third) == (1013, "connection limit reached")
    await chat_once(here)
    await chat_once(there)
    for ws in (here, there):
        await ws.close()
