"""The client through what a fleet goes through, while messages are published on the HTTP API:
one worker of two drained (SIGTERM), one killed (-9), Redis restarted. Every client must end
holding every acknowledged id exactly once, in order, with no gap reported.

Clients are spread over both workers by the kernel; the worker disrupted is the one holding
the first client's connection (read from ``/proc``), so at least one client goes through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import httpx
import pytest

from gateway.client import Client, Joined, Reconnect
from tests.client.support import API_KEY, Publisher, Recorder, exactly_once_in_order
from tests.redis.fleet import fleet_env as redis_fleet_env
from tests.support.fleet import fleet, serving_process, wait_for_workers
from tests.support.redis import RedisServer
from tests.support.servers import GatewayProcess, poll_until, scaled

pytestmark = pytest.mark.redis

ROOM = "feed"
CLIENTS = 6
CLAIM_SECONDS = 3
"""GATEWAY_HEARTBEAT_TIMEOUT: how long a killed worker's claim on a client id outlives it."""


def in_room(recorder: Recorder) -> bool:
    return any(isinstance(e, Joined) and e.room == ROOM for e in recorder.events)


def holds(recorder: Recorder, ids: set[int]) -> bool:
    return ids <= set(recorder.ids(ROOM))


def env(broker_url: str) -> dict[str, str]:
    return {
        **redis_fleet_env(broker_url),
        "GATEWAY_API_KEY": API_KEY,
        "GATEWAY_HEARTBEAT_INTERVAL": "1",
        "GATEWAY_HEARTBEAT_TIMEOUT": str(CLAIM_SECONDS),
        "GATEWAY_DRAIN_JITTER": "0.5",
    }


@contextlib.asynccontextmanager
async def crowd(server: GatewayProcess) -> AsyncIterator[list[Recorder]]:
    """``CLIENTS`` clients in ``ROOM``, each read by a recorder; all closed afterwards."""
    recorders: list[Recorder] = []
    try:
        for n in range(CLIENTS):
            client = Client(
                server.ws_url(""), f"c{n}", rooms=[ROOM], backoff_base=0.05, backoff_cap=1.0
            )
            async with asyncio.timeout(scaled(10)):
                await client.connect()
            recorders.append(Recorder(client))
        for recorder in recorders:
            await recorder.until(
                partial(in_room, recorder),
                10,
                f"{ROOM} joined",
            )
        yield recorders
    finally:
        await asyncio.gather(*(recorder.close() for recorder in recorders))


def port_of(recorder: Recorder) -> int:
    connection = recorder.client.connection
    assert connection is not None, f"{recorder.client.user} is offline"
    return int(connection.local_address[1])


Disruption = Callable[[Publisher], Awaitable[None]]


async def publish_through(
    server: GatewayProcess, recorders: list[Recorder], disrupt: Disruption
) -> Publisher:
    """Publish before, during and after ``disrupt()``; then wait until every client holds
    every acknowledged id, and check it holds each once, in order, with no gap reported."""
    publisher = Publisher(server.base_url, ROOM)
    task = asyncio.create_task(publisher.run())
    try:
        await recorders[0].until(lambda: len(recorders[0].ids(ROOM)) >= 20, 10, "20 messages")
        await disrupt(publisher)
        after = len(publisher.acked) + 30
        await recorders[0].until(lambda: len(publisher.acked) >= after, 30, "30 more published")
    finally:
        publisher.stopping = True
        async with asyncio.timeout(scaled(10)):
            await task
    acked = set(publisher.acked)
    for recorder in recorders:
        await recorder.until(partial(holds, recorder, acked), 30, "every acked id")
    for recorder in recorders:
        problems = exactly_once_in_order(recorder.ids(ROOM), publisher.acked, publisher.uncertain)
        assert problems == [], f"{recorder.client.user}: {problems}"
        assert recorder.gaps() == [], recorder.gaps()
        assert recorder.client.connected
    return publisher


def summary(publisher: Publisher, recorders: list[Recorder]) -> str:
    drops = sum(len(r.disconnects()) for r in recorders)
    codes = sorted({d.code for r in recorders for d in r.disconnects()})
    return (
        f"{len(publisher.acked)} acked ({publisher.refused} refused, {publisher.uncertain} "
        f"uncertain), {drops} drops with codes {codes}, every client exactly once in order"
    )


async def test_through_a_worker_drain(redis_url: str) -> None:
    with fleet(env(redis_url)) as server:
        workers = wait_for_workers(server, 2)
        async with crowd(server) as recorders:
            target = serving_process(server.port, port_of(recorders[0]), workers)

            async def drain(_: Publisher) -> None:
                os.kill(target, signal.SIGTERM)
                await recorders[0].until(
                    lambda: any(isinstance(e, Reconnect) for e in recorders[0].events),
                    10,
                    "the reconnect hint",
                )
                await recorders[0].until(
                    lambda: recorders[0].client.connected and bool(recorders[0].disconnects()),
                    15,
                    "the reconnection",
                )

            publisher = await publish_through(server, recorders, drain)
            (drop,) = recorders[0].disconnects()
            assert drop.code == 1012, drop
            print(f"\ndrain: {summary(publisher, recorders)}")


async def test_through_a_worker_kill(redis_url: str) -> None:
    with fleet(env(redis_url)) as server:
        workers = wait_for_workers(server, 2)
        async with crowd(server) as recorders:
            target = serving_process(server.port, port_of(recorders[0]), workers)

            async def kill(_: Publisher) -> None:
                os.kill(target, signal.SIGKILL)
                await recorders[0].until(
                    lambda: recorders[0].client.connected and bool(recorders[0].disconnects()),
                    CLAIM_SECONDS + 15,
                    "the reconnection",
                )

            publisher = await publish_through(server, recorders, kill)
            assert recorders[0].disconnects()[0].code == 1006
            assert all(d.retry_in is not None for r in recorders for d in r.disconnects())
            print(f"\nkill -9: {summary(publisher, recorders)}")


async def test_through_a_redis_restart(own_redis: RedisServer) -> None:
    with fleet(env(f"{own_redis.url}?prefix=client")) as server:
        wait_for_workers(server, 2)
        async with crowd(server) as recorders:

            async def restart(publisher: Publisher) -> None:
                await asyncio.to_thread(own_redis.stop)
                await readiness(server, 503, 10)
                refused = publisher.refused
                await poll_until(lambda: publisher.refused > refused, 10, "a refused publish")
                await asyncio.to_thread(own_redis.start)
                await readiness(server, 200, 20)

            publisher = await publish_through(server, recorders, restart)
            print(f"\nredis restart: {summary(publisher, recorders)}")


async def readiness(server: GatewayProcess, status: int, seconds: float) -> None:
    """Until ``/readyz`` answers ``status``, without blocking the clients' event loop."""
    async with httpx.AsyncClient(timeout=scaled(5)) as http, asyncio.timeout(scaled(seconds)):
        for _ in range(10_000):
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(server.base_url + "/readyz")).status_code == status:
                    return
            await asyncio.sleep(0.05)
