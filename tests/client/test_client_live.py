"""The client against ``gateway serve``: tokens both ways, rooms, direct messages, pings, token
refresh through a callback, the closes it stays offline after (and ``reconnect_on``), a gap it
reports, and a program that stops reading for a while."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import TypedDict

import httpx
import pytest

from gateway.auth import mint
from gateway.client import (
    Client,
    ClientClosed,
    Direct,
    Disconnected,
    Joined,
    Left,
    Message,
    Pong,
    Presence,
    Recovered,
    Refreshed,
    RefreshFailed,
    Resumed,
)
from tests.client.support import API_KEY, Recorder
from tests.support.servers import GatewayProcess, poll_until, scaled, start_gateway

SECRET = "client-tests-auth-secret-" + "s" * 16


class Fast(TypedDict):
    backoff_base: float
    backoff_cap: float


FAST = Fast(backoff_base=0.05, backoff_cap=0.5)


@pytest.fixture(scope="module")
def server() -> Iterator[GatewayProcess]:
    settings = {
        "GATEWAY_API_KEY": API_KEY,
        "GATEWAY_HISTORY_SIZE": "5",
        "GATEWAY_IDLE_TIMEOUT": "2",
    }
    with start_gateway(settings) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def auth_server() -> Iterator[GatewayProcess]:
    settings = {"GATEWAY_AUTH_SECRET": SECRET, "GATEWAY_AUTH_LEEWAY": "0"}
    with start_gateway(settings) as gateway:
        yield gateway


@contextlib.asynccontextmanager
async def recorded(client: Client) -> AsyncIterator[Recorder]:
    async with asyncio.timeout(scaled(10)):
        await client.connect()
    recorder = Recorder(client)
    try:
        yield recorder
    finally:
        await recorder.close()


def has(recorder: Recorder, kind: type, **fields: object) -> bool:
    return any(
        isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items())
        for e in recorder.events
    )


async def post(server: GatewayProcess, room: str, texts: list[str]) -> list[str]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(headers=headers, timeout=scaled(5)) as http:
        ids = []
        for text in texts:
            response = await http.post(
                f"{server.base_url}/api/rooms/{room}/messages", json={"text": text}
            )
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        return ids


@pytest.mark.parametrize("token_in", ["query", "subprotocol"])
async def test_a_token_in_the_query_or_the_subprotocol(
    auth_server: GatewayProcess, token_in: str
) -> None:
    token = mint(SECRET, f"bot-{token_in}", ttl=600)
    client = Client(auth_server.ws_url(""), f"bot-{token_in}", token=token, token_in=token_in)  # type: ignore[arg-type]
    async with recorded(client) as bot:
        assert client.connected
        if token_in == "subprotocol":
            assert client.connection is not None
            assert client.connection.subprotocol == "gateway.jwt"
        await client.ping()
        await bot.until(lambda: has(bot, Pong), 5, "pong")


async def test_a_refused_token_leaves_the_client_offline(auth_server: GatewayProcess) -> None:
    token = mint("another-secret-of-enough-length-0000", "mallory", ttl=600)
    client = Client(auth_server.ws_url(""), "mallory", token=token, **FAST)
    with pytest.raises(ClientClosed, match="HTTP 403"):
        async with asyncio.timeout(scaled(10)):
            await client.connect()
    assert client.offline is not None
    assert client.offline.code == 1008
    with pytest.raises(ClientClosed):
        await client.send("lobby", "hello?")


async def test_rooms_direct_messages_and_leaving(server: GatewayProcess) -> None:
    async with (
        recorded(Client(server.ws_url(""), "alice", rooms=["team"])) as alice,
        recorded(Client(server.ws_url(""), "bob")) as bob,
    ):
        await bob.client.join("team")
        await bob.until(lambda: has(bob, Joined, room="team"), 5, "team joined")
        await alice.until(lambda: has(alice, Joined, room="team"), 5, "team joined")
        await alice.client.send("team", "hi bob")
        await bob.until(lambda: has(bob, Message, room="team", text="hi bob"), 5, "the message")
        await alice.client.direct("bob", "psst")
        await bob.until(lambda: has(bob, Direct, sender="alice", text="psst"), 5, "the direct")
        await bob.client.leave("team")
        await bob.until(lambda: has(bob, Left, room="team"), 5, "left")
        assert bob.client.rooms == ("lobby",)
        await alice.client.send("team", "gone?")
        await alice.until(lambda: has(alice, Message, text="gone?"), 5, "own message")
        await bob.client.ping()
        await bob.until(lambda: has(bob, Pong), 5, "pong")
        assert not has(bob, Message, text="gone?")


async def test_the_token_is_refreshed_before_it_runs_out(auth_server: GatewayProcess) -> None:
    calls = 0

    async def refresh() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("identity provider hiccup")
        return mint(SECRET, "carol", ttl=600)

    ttl = scaled(3)
    expires = time.time() + ttl
    first = mint(SECRET, "carol", ttl=ttl)
    client = Client(auth_server.ws_url(""), "carol", token=first, refresh=refresh, **FAST)
    async with recorded(client) as carol:
        await carol.until(lambda: has(carol, RefreshFailed), ttl, "the failed refresh reported")
        await carol.until(lambda: has(carol, Refreshed), ttl, "refreshed before the expiry")
        await poll_until(lambda: time.time() > expires + 1, ttl + 5, "the old expiry to pass")
        await client.ping()
        await carol.until(lambda: has(carol, Pong), 5, "a pong after the old expiry")
        assert carol.disconnects() == []
        assert client.token is not None
        assert client.token != first


async def kick(server: GatewayProcess, user: str) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(headers=headers, timeout=scaled(5)) as http:
        response = await http.post(f"{server.base_url}/api/users/{user}/disconnect")
        assert response.status_code == 202, response.text


async def test_a_policy_close_leaves_it_offline_and_ends_the_iteration(
    server: GatewayProcess,
) -> None:
    async with recorded(Client(server.ws_url(""), "dave", **FAST)) as dave:
        await kick(server, "dave")
        async with asyncio.timeout(scaled(5)):
            await dave.task  # the iteration ended by itself
        (drop,) = dave.disconnects()
        assert (drop.code, drop.retry_in) == (1008, None)
        assert "disconnected by server" in drop.reason
        with pytest.raises(ClientClosed):
            await dave.client.send("lobby", "still there?")


async def test_reconnect_on_brings_it_back_after_a_policy_close(server: GatewayProcess) -> None:
    client = Client(server.ws_url(""), "erin", reconnect_on={1008}, **FAST)
    async with recorded(client) as erin:
        await kick(server, "erin")
        await erin.until(
            lambda: client.connected and bool(erin.disconnects()), 10, "the reconnection"
        )
        assert erin.disconnects()[0].code == 1008


async def test_idle_closes_stay_offline_unless_asked(server: GatewayProcess) -> None:
    async with (
        recorded(Client(server.ws_url(""), "idle", **FAST)) as idle,
        recorded(Client(server.ws_url(""), "keen", reconnect_on={4408}, **FAST)) as keen,
    ):
        await idle.until(lambda: idle.task.done(), 10, "the idle close")
        assert [(d.code, d.retry_in) for d in idle.disconnects()] == [(4408, None)]
        await keen.until(
            lambda: keen.client.connected and bool(keen.disconnects()), 10, "a reconnection"
        )
        assert keen.disconnects()[0].code == 4408


async def test_a_gap_in_history_is_reported_before_what_follows_it(server: GatewayProcess) -> None:
    ids = await post(server, "archive", [f"old-{n}" for n in range(8)])  # history keeps 5
    async with recorded(Client(server.ws_url(""), "frank", rooms=["archive"])) as frank:
        await frank.until(lambda: has(frank, Resumed, room="archive"), 5, "the resume")
        events = [
            e
            for e in frank.events
            if getattr(e, "room", None) == "archive" and not isinstance(e, Presence)
        ]
        kinds = [type(e) for e in events]
        assert kinds == [Joined, Recovered, *[Message] * 5, Resumed]
        assert events[1] == Recovered("archive", "0")
        assert [e.id for e in events if isinstance(e, Message)] == ids[3:]


async def test_without_backfill_a_room_starts_with_what_comes_next(server: GatewayProcess) -> None:
    await post(server, "news", ["before"])
    client = Client(server.ws_url(""), "gina", rooms=["news"], backfill=False)
    async with recorded(client) as gina:
        await gina.until(lambda: has(gina, Joined, room="news"), 5, "news joined")
        (after,) = await post(server, "news", ["after"])
        await gina.until(lambda: has(gina, Message, room="news"), 5, "the next message")
        assert [e.id for e in gina.events if isinstance(e, Message)] == [after]


async def test_a_program_that_stops_reading_gets_everything_later_in_order(
    server: GatewayProcess,
) -> None:
    client = Client(server.ws_url(""), "hank", rooms=["busy"], queue_size=4)
    async with asyncio.timeout(scaled(10)):
        await client.connect()
    try:
        ids = await post(server, "busy", [f"n{n}" for n in range(60)])
        got: list[str] = []
        drops: list[Disconnected] = []
        async with asyncio.timeout(scaled(10)):
            async for event in client:
                if isinstance(event, Message):
                    got.append(event.id)
                drops += [event] if isinstance(event, Disconnected) else []
                if len(got) == len(ids):
                    break
        assert got == ids
        assert drops == []  # the backlog waited in the socket, not in memory of the client's
    finally:
        await client.close()
