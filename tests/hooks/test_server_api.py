"""The server API against ``gateway serve`` (memory) and ``gateway serve --workers 2`` (Redis):
idempotent publish (repeats and a concurrent burst with one key), rooms, history, and commands
that reach every connection of a user on every worker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.auth import mint
from tests.support.clients import EventReader, departures, open_ws
from tests.support.fleet import fleet, fleet_env
from tests.support.metrics import metric
from tests.support.redis import delete_prefix
from tests.support.servers import GatewayProcess, scaled, start_gateway

API_KEY = "server-api-key-" + "k" * 24
AUTH = {"Authorization": f"Bearer {API_KEY}"}
AUTH_SECRET = "server-api-auth-secret-" + "a" * 16
SETTINGS = {
    "GATEWAY_API_KEY": API_KEY,
    "GATEWAY_RATE_LIMIT": "0",
    "GATEWAY_AUTH_SECRET": AUTH_SECRET,
    "GATEWAY_COMMAND_RATE_LIMIT": "0",
}
"""Auth on: a user's several tabs are several connections of one proven identity."""


@pytest.fixture(scope="module", params=["memory", "redis-2-workers"])
def server(request: pytest.FixtureRequest) -> Iterator[GatewayProcess]:
    if request.param == "memory":
        with start_gateway(SETTINGS) as gateway:
            yield gateway
        return
    base = request.getfixturevalue("redis_base_url")
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    try:
        with fleet(fleet_env(f"{base}?prefix={prefix}", SETTINGS)) as gateway:
            yield gateway
    finally:
        delete_prefix(base, prefix)


def api(server: GatewayProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("headers", AUTH)
    return httpx.request(method, server.base_url + path, timeout=scaled(10), **kwargs)


def publish(server: GatewayProcess, room: str, text: str, key: str | None) -> httpx.Response:
    headers = {**AUTH, **({} if key is None else {"Idempotency-Key": key})}
    return api(server, "POST", f"/api/rooms/{room}/messages", json={"text": text}, headers=headers)


def history(server: GatewayProcess, room: str, **params: str) -> dict[str, Any]:
    answer = api(server, "GET", f"/api/rooms/{room}/messages", params=params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def connect(server: GatewayProcess, user: str) -> EventReader:
    token = mint(AUTH_SECRET, user, ttl=600)
    reader = EventReader(await open_ws(server.ws_url(f"/ws/{user}?token={token}")), user)
    await reader.until(lambda: reader.has("joined", room="lobby"), 5, "the lobby's joined")
    return reader


async def wait_for(reader: EventReader, kind: str, **fields: Any) -> None:
    await reader.until(lambda: reader.has(kind, **fields), 5, f"{kind} {fields}")


def test_a_repeated_idempotency_key_answers_the_first_call_and_publishes_once(
    server: GatewayProcess,
) -> None:
    room, key = f"idem-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    first = publish(server, room, "once", key)
    assert first.status_code == 202, first.text
    repeats = [publish(server, room, "once", key) for _ in range(6)]
    assert {r.status_code for r in repeats} == {202}
    assert all(r.json() == first.json() for r in repeats)
    assert all(r.headers.get("idempotent-replayed") == "true" for r in repeats)
    assert [m["id"] for m in history(server, room)["messages"]] == [first.json()["id"]]


async def test_concurrent_calls_with_one_key_publish_once(server: GatewayProcess) -> None:
    room, key = f"race-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    async with httpx.AsyncClient(base_url=server.base_url, timeout=scaled(15)) as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    f"/api/rooms/{room}/messages",
                    json={"text": "racing"},
                    headers={**AUTH, "Idempotency-Key": key},
                )
                for _ in range(20)
            )
        )
    ok = [a for a in answers if a.status_code == 202]
    assert {a.status_code for a in answers} <= {202, 409}
    assert ok
    assert len({a.json()["id"] for a in ok}) == 1
    assert len(history(server, room)["messages"]) == 1


@pytest.mark.parametrize(
    ("key", "status"),
    [("", 400), ("k" * 129, 400), ("tab\there", 400)],
    ids=["empty", "129", "ctl"],
)
def test_bad_idempotency_keys_are_refused_and_counted(
    server: GatewayProcess, key: str, status: int
) -> None:
    room = f"badkey-{uuid.uuid4().hex[:8]}"
    answer = publish(server, room, "never", key)
    assert answer.status_code == status
    assert "Idempotency-Key" in answer.json()["detail"]
    assert history(server, room)["messages"] == []


def test_a_key_reused_for_another_request_is_422(server: GatewayProcess) -> None:
    room, key = f"reuse-{uuid.uuid4().hex[:8]}", "k" * 128
    assert publish(server, room, "first", key).status_code == 202
    again = publish(server, room, "different", key)
    assert again.status_code == 422
    assert "different request" in again.json()["detail"]
    assert metric(
        server.base_url, "gateway_api_requests_total", operation="publish", outcome="conflict"
    )


def test_history_pages_with_after_and_limit(server: GatewayProcess) -> None:
    room = f"hist-{uuid.uuid4().hex[:8]}"
    ids = [publish(server, room, f"m{n}", None).json()["id"] for n in range(5)]
    page = history(server, room, limit="2")
    assert [m["id"] for m in page["messages"]] == ids[:2]
    assert page["recovered"] is True
    assert page["messages"][0]["text"] == "m0"
    rest = history(server, room, after=ids[1])
    assert [m["id"] for m in rest["messages"]] == ids[2:]
    never = f"never-{uuid.uuid4().hex[:8]}"
    assert history(server, never) == {"room": never, "messages": [], "recovered": True}


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/rooms/lobby/messages?after=nope", 422),
        ("/api/rooms/lobby/messages?limit=0", 422),
        ("/api/rooms/lobby/messages?limit=1001", 422),
        ("/api/rooms/-bad-/messages", 404),
    ],
)
def test_bad_history_requests_say_why(server: GatewayProcess, path: str, status: int) -> None:
    answer = api(server, "GET", path)
    assert answer.status_code == status
    assert answer.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/rooms"),
        ("GET", "/api/rooms/lobby/messages"),
        ("POST", "/api/users/someone/disconnect"),
        ("DELETE", "/api/rooms/lobby/members/someone"),
    ],
)
def test_every_route_needs_the_key(server: GatewayProcess, method: str, path: str) -> None:
    assert api(server, method, path, headers={}).status_code == 401
    assert api(server, method, path, headers={"Authorization": "Bearer no"}).status_code == 401


async def test_rooms_lists_counts_across_workers(server: GatewayProcess) -> None:
    room = f"count-{uuid.uuid4().hex[:8]}"
    readers = [await connect(server, f"counted-{n}-{room}") for n in range(4)]
    for reader in readers[:3]:
        await reader.send({"type": "join", "room": room})
        await wait_for(reader, "joined", room=room)
    rooms = {
        entry["room"]: entry["count"] for entry in api(server, "GET", "/api/rooms").json()["rooms"]
    }
    assert rooms[room] == 3
    assert rooms["lobby"] >= 4
    for reader in readers:
        await reader.close()


async def test_disconnect_closes_every_connection_of_the_user_within_a_second(
    server: GatewayProcess,
) -> None:
    user = f"zed-{uuid.uuid4().hex[:6]}"
    tabs = [await connect(server, user) for _ in range(4)]
    bystander = await connect(server, f"bystander-{user}")
    started = time.monotonic()
    answer = api(server, "POST", f"/api/users/{user}/disconnect")
    assert answer.status_code == 202
    assert answer.json() == {"user": user, "connections": 4}
    for tab in tabs:
        await asyncio.wait_for(tab.ended.wait(), scaled(1))
        assert tab.close_code == 1008
        assert tab.ws.protocol.close_rcvd is not None
        assert tab.ws.protocol.close_rcvd.reason == "disconnected by server"
    assert time.monotonic() - started < scaled(1.5)
    assert not bystander.closed
    await bystander.close()


def test_disconnecting_nobody_is_202_with_no_connections_and_a_bad_name_404(
    server: GatewayProcess,
) -> None:
    nobody = api(server, "POST", f"/api/users/nobody-{uuid.uuid4().hex[:6]}/disconnect")
    assert nobody.status_code == 202
    assert nobody.json()["connections"] == 0
    assert api(server, "POST", "/api/users/%E2%80%8Bzero/disconnect").status_code == 404


async def test_removing_a_member_makes_each_connection_leave(server: GatewayProcess) -> None:
    room, user = f"rm-{uuid.uuid4().hex[:8]}", f"yan-{uuid.uuid4().hex[:6]}"
    tabs = [await connect(server, user) for _ in range(3)]
    watcher = await connect(server, f"watcher-{user}")
    for reader in [*tabs, watcher]:
        await reader.send({"type": "join", "room": room})
        await wait_for(reader, "joined", room=room)
    answer = api(server, "DELETE", f"/api/rooms/{room}/members/{user}")
    assert answer.status_code == 202
    for tab in tabs:
        await wait_for(tab, "left", room=room)
    await watcher.until(
        lambda: any(user in departures(e, room) for e in watcher.events), 5, "presence left"
    )
    publish(server, room, "after the removal", None)
    await watcher.until(lambda: watcher.has("message", text="after the removal"), 5, "message")
    await tabs[0].send({"type": "ping"})
    await tabs[0].until(lambda: tabs[0].has("pong"), 5, "pong")
    assert not any(tab.has("message", text="after the removal") for tab in tabs)
    for reader in [*tabs, watcher]:
        await reader.close()
