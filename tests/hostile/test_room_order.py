"""Room order on join and ``recovered`` (SPEC "Hardening"), against real servers on both brokers.

A client that reconnects while a publisher posts through the HTTP API must end up holding every
acknowledged id exactly once, resuming each time from the newest id it holds when the ``joined``
ack's ``last_id`` is newer. Before the fix, live messages of the lobby came before its ``joined``
(the hub awaited presence after subscribing), so a client resumed after an id newer than what it
had missed, and lost those messages for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from tests.support.clients import open_ws, recv_until
from tests.support.fleet import fleet, fleet_env
from tests.support.servers import GatewayProcess, scaled, start_gateway

API_KEY = "room-order-key"
RECONNECTS = 15
LIVE_PER_VISIT = 8
PUBLISH_CAP = 4000
"""Posts at most; the publisher stops earlier once the reconnecting client is done."""


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("fleet", marks=pytest.mark.redis),
    ]
)
def gateway(request: pytest.FixtureRequest) -> Iterator[GatewayProcess]:
    """``gateway serve`` on memory, on Redis (one worker), and ``--workers 2`` on Redis."""
    env = {"GATEWAY_API_KEY": API_KEY, "GATEWAY_HISTORY_SIZE": str(PUBLISH_CAP + 100)}
    if request.param == "memory":
        with start_gateway(env) as server:
            yield server
        return
    url = str(request.getfixturevalue("redis_url"))
    if request.param == "redis":
        with start_gateway({**env, "GATEWAY_BROKER_URL": url}) as server:
            yield server
        return
    with fleet(fleet_env(url, env)) as server:
        yield server


def events_of(frame: str | bytes) -> list[dict[str, Any]]:
    assert isinstance(frame, str)
    return [json.loads(line) for line in frame.split("\n") if line]


@dataclass
class Publisher:
    """Posts to one room through the API, as fast as the server answers, until told to stop."""

    server: GatewayProcess
    room: str
    ids: list[int] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        url = f"{self.server.base_url}/api/rooms/{self.room}/messages"
        async with httpx.AsyncClient(timeout=scaled(10), headers=headers) as client:
            for n in range(PUBLISH_CAP):
                if self.stop.is_set():
                    return
                answer = await client.post(url, json={"sender": "api", "text": f"m{n}"})
                assert answer.status_code == 202, answer.text
                self.ids.append(int(answer.json()["id"]))

    async def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + scaled(20)
        for _ in range(10_000):
            if len(self.ids) >= count or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        assert len(self.ids) >= count, f"the publisher posted only {len(self.ids)}"


@dataclass
class Reconnecter:
    """A client like the chat page: keeps what it got, resumes from the newest id it holds."""

    server: GatewayProcess
    received: Counter[int] = field(default_factory=Counter)
    early: int = 0
    """Lobby messages that came before the lobby's ``joined``."""
    not_recovered: int = 0

    @property
    def newest(self) -> int:
        return max(self.received, default=0)

    def take(self, event: dict[str, Any]) -> None:
        if event.get("type") == "message" and event.get("room") == "lobby":
            self.received[int(event["id"])] += 1

    async def visit(
        self, name: str, until: int | None = None, wanted: int = LIVE_PER_VISIT
    ) -> None:
        """One connection: wait for ``joined``, resume if behind, read ``wanted`` live messages,
        leave. With ``until``, reads until it holds that id instead."""
        ws = await open_ws(self.server.ws_url(f"/ws/{name}"))
        try:
            await self._visit(ws, until, wanted)
        finally:
            await ws.close()

    async def _visit(self, ws: ClientConnection, until: int | None, wanted: int) -> None:
        joined: dict[str, Any] | None = None
        async with asyncio.timeout(scaled(10)):
            while joined is None:
                for event in events_of(await ws.recv()):
                    if event.get("type") == "joined" and event.get("room") == "lobby":
                        joined = event
                    elif joined is None and event.get("type") == "message":
                        self.early += 1
                        self.take(event)
                    else:
                        self.take(event)
        last_id = int(joined.get("last_id", 2**63))  # a server that does not say: ask
        resumed = last_id <= self.newest
        if not resumed:
            await ws.send(json.dumps({"type": "resume", "room": "lobby", "after": self.newest}))
        live = 0
        async with asyncio.timeout(scaled(20)):
            for _ in range(100_000):
                if resumed and (live >= wanted if until is None else self.newest >= until):
                    return
                for event in events_of(await ws.recv()):
                    self.take(event)
                    if event.get("type") == "resumed":
                        resumed = True
                        self.not_recovered += event.get("recovered") is False
                    elif resumed and event.get("type") == "message":
                        live += 1


async def test_a_reconnecting_client_holds_every_message_once(gateway: GatewayProcess) -> None:
    client = Reconnecter(gateway)
    await client.visit("reader-0", wanted=0)  # before any post: everything posted is new to it
    publisher = Publisher(gateway, "lobby")
    posting = asyncio.create_task(publisher.run())
    try:
        await publisher.wait_for(20)
        for n in range(1, RECONNECTS + 1):
            await client.visit(f"reader-{n}")
    finally:
        publisher.stop.set()
        await posting
    await client.visit("reader-last", until=publisher.ids[-1])

    posted = set(publisher.ids)
    got = {seq for seq in client.received if seq in posted}
    missing = sorted(posted - got)
    twice = sorted(seq for seq, times in client.received.items() if times > 1)
    assert not missing, f"lost {len(missing)} of {len(posted)} over {RECONNECTS} reconnects"
    assert not twice, f"{len(twice)} of {len(posted)} received more than once"
    assert client.early == 0, f"{client.early} lobby messages came before the lobby's joined"
    assert client.not_recovered == 0


async def test_resume_into_a_room_not_joined_is_in_order(gateway: GatewayProcess) -> None:
    """joined, the replay, resumed, then live: increasing ids, no gap, no duplicate."""
    publisher = Publisher(gateway, "ops")
    posting = asyncio.create_task(publisher.run())
    try:
        await publisher.wait_for(30)
        after = publisher.ids[10]
        ws = await open_ws(gateway.ws_url("/ws/resumer"))
        try:
            await recv_until(ws, lambda e: e.get("type") == "joined" and e["room"] == "lobby")
            await ws.send(json.dumps({"type": "resume", "room": "ops", "after": str(after)}))
            seen: list[dict[str, Any]] = []
            live = 0
            async with asyncio.timeout(scaled(20)):
                for _ in range(100_000):
                    if live >= 20:
                        break
                    for event in events_of(await ws.recv()):
                        if event.get("room") != "ops" or event.get("type") == "presence":
                            continue
                        seen.append(event)
                        live += any(e["type"] == "resumed" for e in seen[:-1])
        finally:
            await ws.close()
    finally:
        publisher.stop.set()
        await posting

    kinds = [event["type"] for event in seen]
    assert kinds[0] == "joined", kinds[:5]
    assert int(seen[0]["last_id"]) >= after
    assert kinds.count("joined") == 1
    assert kinds.count("resumed") == 1
    ids = [int(event["id"]) for event in seen if event["type"] == "message"]
    assert ids == list(range(after + 1, after + 1 + len(ids))), (
        f"not increasing without a gap after {after}: {ids[:40]}"
    )
    resumed = seen[kinds.index("resumed")]
    assert resumed["recovered"] is True
    assert resumed["count"] == kinds.index("resumed") - 1
    assert resumed["count"] >= 1


@pytest.mark.parametrize("broker", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_recovered_says_whether_the_history_still_reaches(
    broker: str, request: pytest.FixtureRequest
) -> None:
    env = {"GATEWAY_API_KEY": API_KEY, "GATEWAY_HISTORY_SIZE": "5"}
    if broker == "redis":
        env["GATEWAY_BROKER_URL"] = str(request.getfixturevalue("redis_url"))
    with start_gateway(env) as server:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(timeout=scaled(10), headers=headers) as api:

            async def post(room: str, count: int) -> list[int]:
                ids = []
                for n in range(count):
                    url = f"{server.base_url}/api/rooms/{room}/messages"
                    answer = await api.post(url, json={"sender": "api", "text": f"m{n}"})
                    ids.append(int(answer.json()["id"]))
                return ids

            await post("kept", 3)
            trimmed = await post("trimmed", 8)

        async def resume(room: str, after: int) -> dict[str, Any]:
            ws = await open_ws(server.ws_url(f"/ws/resumer-{room}-{after}"))
            try:
                await recv_until(ws, lambda e: e.get("type") == "joined" and e["room"] == "lobby")
                await ws.send(json.dumps({"type": "resume", "room": room, "after": str(after)}))
                resumed, _ = await recv_until(ws, lambda e: e.get("type") == "resumed")
                return resumed
            finally:
                with contextlib.suppress(Exception):
                    await ws.close()

        everything = await resume("kept", 0)
        assert (everything["recovered"], everything["count"]) == (True, 3)
        lost = await resume("trimmed", 0)
        assert (lost["recovered"], lost["count"]) == (False, 5)
        reaches = await resume("trimmed", trimmed[2])
        assert (reaches["recovered"], reaches["count"]) == (True, 5)
        gap = await resume("trimmed", trimmed[1])
        assert (gap["recovered"], gap["count"]) == (False, 5)
