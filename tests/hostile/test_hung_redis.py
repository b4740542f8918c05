"""A Redis that stops answering (SIGSTOP: the socket stays open, nothing comes back).

A closed Redis is noticed at once; a hung one only by the clocks. /readyz stayed 200 for 9 s,
a handshake hung 10 s before its 1011, an API publish 10 s before its 503. SPEC "The broker's
health": /readyz is 503 within 3 s, handshakes and publishes fail within 3 s instead of
hanging, and everything comes back by itself once Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.support.clients import EventReader, open_ws
from tests.support.fleet import fleet_env, launch_fleet
from tests.support.metrics import metric
from tests.support.redis import RedisServer
from tests.support.servers import GatewayProcess, scaled

pytestmark = pytest.mark.redis

API_KEY = "hung-redis-test-key"
BOUND = 3.0
"""SPEC: seconds within which a hung broker is reported and requests fail."""
QUEUED = 30
PATIENCE = 25.0
"""How long a measurement waits before calling it a hang (so the unfixed gateway's figures
are measured too, not just refused)."""


@contextlib.contextmanager
def gateway(redis: RedisServer, workers: int, query: str = "") -> Iterator[GatewayProcess]:
    env = fleet_env(
        f"{redis.url}?prefix=hung{query}",
        {
            "GATEWAY_API_KEY": API_KEY,
            "GATEWAY_RATE_LIMIT": "100/1",
            "GATEWAY_PRESENCE_TTL": "3",
            "GATEWAY_IDLE_TIMEOUT": "0",
        },
    )
    server = launch_fleet(env, workers)
    try:
        yield server
    finally:
        server.stop()


async def chatter(server: GatewayProcess, name: str) -> EventReader:
    client = EventReader(await open_ws(server.ws_url(f"/ws/{name}")), name=name)
    await client.until(lambda: client.has("joined", room="lobby"), 15, "the lobby")
    return client


async def timed(what: Awaitable[str]) -> tuple[float, str]:
    """Seconds until ``what`` settles (capped at PATIENCE) and what it settled as."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(scaled(PATIENCE)):
            outcome = await what
    except TimeoutError:
        outcome = "still hanging"
    return time.monotonic() - started, outcome


async def readyz_turns_503(server: GatewayProcess) -> str:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=scaled(PATIENCE)) as http:
        while True:
            answer = await http.get("/readyz")
            if answer.status_code == 503:
                return "503"
            await asyncio.sleep(0.05)


async def handshake_outcome(server: GatewayProcess) -> str:
    try:
        ws = await open_ws(server.ws_url("/ws/newcomer"))
    except (InvalidHandshake, OSError) as error:
        return f"refused: {error}"
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass
    return f"closed {ws.close_code}"


async def publish_outcome(server: GatewayProcess, http: httpx.AsyncClient | None = None) -> str:
    if http is None:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=scaled(PATIENCE)) as own:
            return await publish_outcome(server, own)
    answer = await http.post(
        "/api/rooms/lobby/messages",
        json={"sender": "api", "text": "during"},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    return str(answer.status_code)


async def message_outcome(client: EventReader) -> str:
    await client.send({"type": "message", "room": "lobby", "text": "during"})
    while not client.has("error"):
        if client.closed:
            return f"closed {client.close_code}"
        await client.next_change()
    return str(next(e["code"] for e in client.events if e.get("type") == "error"))


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_hung_redis_fails_fast_and_everything_recovers(
    own_redis: RedisServer, workers: int
) -> None:
    assert own_redis.process is not None
    redis_pid = own_redis.process.pid
    with gateway(own_redis, workers) as server:
        calm = await chatter(server, "calm")
        try:
            assert server.get("/readyz").status_code == 200
            os.kill(redis_pid, signal.SIGSTOP)
            stopped_at = time.monotonic()
            try:
                results = await asyncio.gather(
                    timed(readyz_turns_503(server)),
                    timed(handshake_outcome(server)),
                    timed(publish_outcome(server)),
                    timed(message_outcome(calm)),
                )
                broker_up = metric(server.base_url, "gateway_broker_up")
                # Past the SPEC's bound every worker knows, and refuses without asking Redis.
                await asyncio.sleep(max(stopped_at + BOUND - time.monotonic(), 0.0))
                late_s, late = await timed(handshake_outcome(server))
            finally:
                os.kill(redis_pid, signal.SIGCONT)
            names = ("/readyz 503", "handshake", "API publish", "chat message")
            figures = ", ".join(
                f"{name}: {outcome} after {seconds:.2f}s"
                for name, (seconds, outcome) in zip(names, results, strict=True)
            )
            figures += f"; handshake once unready: {late} after {late_s:.2f}s"
            print(f"workers={workers}: {figures}; gateway_broker_up={broker_up}")
            (ready_s, _), (handshake_s, handshake), (publish_s, published), (chat_s, chat) = results
            assert ready_s < scaled(BOUND), figures
            assert handshake in {"closed 1011", "closed 1013"}, figures
            assert handshake_s < scaled(BOUND), figures
            assert published == "503", figures
            assert publish_s < scaled(BOUND), figures
            assert chat == "unavailable", figures
            assert chat_s < scaled(BOUND), figures
            assert broker_up == 0, figures
            assert late == "closed 1011", figures
            assert late_s < scaled(0.5), figures

            await recovered(server, calm)
        finally:
            await calm.close()


async def recovered(server: GatewayProcess, calm: EventReader) -> None:
    """Once Redis answers again: ready, a new client admitted, and chat reaches the old one."""
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=scaled(5)) as http:
        await poll_ready(http)
    back = await chatter(server, "back")
    try:
        await back.send({"type": "message", "room": "lobby", "text": "after"})
        await calm.until(lambda: calm.has("message", text="after"), 10, "the message after")
        print(f"recovered in {time.monotonic() - started:.2f}s after SIGCONT")
        assert not calm.closed
        assert metric(server.base_url, "gateway_broker_up") >= 1
    finally:
        await back.close()


async def test_requests_queued_for_a_pooled_connection_fail_fast_too(
    own_redis: RedisServer,
) -> None:
    """More requests than pooled connections: the rest queue behind commands that will time
    out. They used to wait out the pool's timeout (5 s); they fail once the hang is known."""
    assert own_redis.process is not None
    redis_pid = own_redis.process.pid
    with gateway(own_redis, 1, "&max_connections=2") as server:
        limits = httpx.Limits(max_connections=QUEUED)
        async with httpx.AsyncClient(
            base_url=server.base_url, timeout=scaled(PATIENCE), limits=limits
        ) as http:
            assert await publish_outcome(server, http) == "202"
            os.kill(redis_pid, signal.SIGSTOP)
            try:
                results = await asyncio.gather(
                    *(timed(publish_outcome(server, http)) for _ in range(QUEUED))
                )
            finally:
                os.kill(redis_pid, signal.SIGCONT)
            slowest = max(seconds for seconds, _ in results)
            outcomes = sorted({outcome for _, outcome in results})
            figures = f"{QUEUED} publishes on 2 connections: {outcomes}, slowest {slowest:.2f}s"
            print(figures)
            assert outcomes == ["503"], figures
            assert slowest < scaled(BOUND), figures
            await poll_ready(http)
            assert await publish_outcome(server, http) == "202"


async def poll_ready(http: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + scaled(20)
    while (await http.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, "/readyz never 200 again after SIGCONT"
        await asyncio.sleep(0.05)
