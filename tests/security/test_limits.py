"""Resource limits against a real server: connections per worker, handshakes per IP, rooms per
connection, room names, and one message budget per authenticated user."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from tests.security.helpers import (
    CLOSED,
    REFUSED,
    REJECTED,
    SECRET,
    bystander,
    chat_once,
    closed_before_any_data,
    refused,
    token,
    unique,
    wait_connections,
    wait_metric,
)
from tests.support.clients import of_type, open_ws, recv_until
from tests.support.metrics import metric
from tests.support.servers import GatewayProcess, start_gateway


@pytest.fixture(scope="module")
def small() -> Iterator[GatewayProcess]:
    env = {
        "GATEWAY_MAX_CONNECTIONS": "3",
        "GATEWAY_MAX_ROOMS_PER_CONNECTION": "3",
        "GATEWAY_RATE_LIMIT": "0",
    }
    with start_gateway(env) as gateway:
        yield gateway


async def joined(server: GatewayProcess, path: str, **kwargs: Any) -> ClientConnection:
    ws = await open_ws(server.ws_url(path), **kwargs)
    await recv_until(ws, of_type("joined"))
    return ws


async def test_connections_per_worker_beyond_the_limit_close_with_1013(
    small: GatewayProcess,
) -> None:
    async with bystander(small, unique("bystander")):
        wait_connections(small, 1)
        before = metric(small.base_url, CLOSED, reason="policy")
        others = [await joined(small, unique("member")) for _ in range(2)]
        extra = await open_ws(small.ws_url(unique("one-too-many")))
        assert await closed_before_any_data(extra) == (1013, "connection limit reached")
        wait_metric(small, CLOSED, before + 1, reason="policy")
        await others.pop().close()
        wait_connections(small, 2)
        others.append(await joined(small, unique("after-a-leave")))
        await chat_once(others[-1])
        for ws in others:
            await ws.close()
    wait_connections(small, 0)


async def test_rooms_per_connection_are_limited(small: GatewayProcess) -> None:
    before = metric(small.base_url, REJECTED, reason="forbidden")
    ws = await joined(small, unique("collector"))
    for room in ("first", "second"):
        await ws.send(json.dumps({"type": "join", "room": room}))
        await recv_until(ws, of_type("joined", room=room))
    await ws.send(json.dumps({"type": "join", "room": "third"}))
    error, _ = await recv_until(ws, of_type("error"))
    assert (error["code"], error["detail"]) == ("forbidden", "at most 3 rooms at once")
    assert metric(small.base_url, REJECTED, reason="forbidden") == before + 1
    await ws.send(json.dumps({"type": "leave", "room": "first"}))
    await recv_until(ws, of_type("left", room="first"))
    await ws.send(json.dumps({"type": "join", "room": "third"}))
    await recv_until(ws, of_type("joined", room="third"))
    await ws.close()


@pytest.mark.parametrize(
    ("room", "ok"),
    [
        ("r" * 64, True),
        ("team-a.backend:eu_1", True),
        ("r" * 65, False),
        ("café", False),
        ("two words", False),
        ("-leading-dash", False),
        ("lobby\n", False),
        ("<script>", False),
        ("", False),
    ],
    ids=[
        "64-chars",
        "punctuation",
        "65-chars",
        "non-ascii",
        "space",
        "dash",
        "nl",
        "html",
        "empty",
    ],
)
async def test_room_names_have_a_bounded_length_and_charset(
    small: GatewayProcess, room: str, ok: bool
) -> None:
    before = metric(small.base_url, REJECTED, reason="invalid")
    ws = await joined(small, unique("namer"))
    await ws.send(json.dumps({"type": "join", "room": room}))
    event, _ = await recv_until(ws, lambda event: event["type"] in ("joined", "error"))
    if ok:
        assert (event["type"], event["room"]) == ("joined", room)
    else:
        assert (event["type"], event["code"]) == ("error", "invalid")
        assert metric(small.base_url, REJECTED, reason="invalid") == before + 1
    await ws.close()


async def test_connect_rate_per_ip_is_limited_with_429() -> None:
    env = {"GATEWAY_CONNECT_RATE_LIMIT": "3/60", "GATEWAY_RATE_LIMIT": "0"}
    with start_gateway(env) as server:
        async with bystander(server, unique("bystander")):
            others = [await joined(server, unique("quick")) for _ in range(2)]
            status, body, headers = await refused(server.ws_url(unique("too-quick")))
            assert (status, body) == (429, "too many connections, slow down")
            assert 1 <= int(headers["retry-after"]) <= 60
            assert metric(server.base_url, REFUSED, reason="rate_limited") == 1
            # Another client IP (as a trusted proxy in front reports it) has its own budget.
            proxied = {"X-Forwarded-For": "192.0.2.7"}
            ws = await joined(server, unique("elsewhere"), additional_headers=proxied)
            await ws.close()
            for ws in others:
                await ws.close()


async def test_message_budget_is_per_user_not_per_connection() -> None:
    """Two connections of one identity share one budget, so opening more connections does not
    multiply a user's rate (across workers too, when the limiter's storage is Redis)."""
    env = {"GATEWAY_AUTH_SECRET": SECRET, "GATEWAY_RATE_LIMIT": "3/60"}
    with start_gateway(env) as server:
        first = await joined(server, f"/ws/gina?token={token('gina')}")
        second = await joined(server, f"/ws/gina?token={token('gina')}")
        await chat_once(first, "one")
        await chat_once(first, "two")
        await chat_once(second, "three")
        await second.send(json.dumps({"type": "message", "text": "four"}))
        error, _ = await recv_until(second, of_type("error"))
        assert error["code"] == "rate_limited"
        await first.send(json.dumps({"type": "message", "text": "five"}))
        error, _ = await recv_until(first, of_type("error"))
        assert error["code"] == "rate_limited"
        assert metric(server.base_url, REJECTED, reason="rate_limited") == 2
        other = await joined(server, f"/ws/hank?token={token('hank')}")
        await chat_once(other, "someone else's budget is untouched")
        for ws in (first, second, other):
            await ws.close()
