"""A connect storm on a real fleet must not exhaust the workers' Redis connection pools.

Every handshake awaits several Redis commands (the duplicate check, presence writes and reads,
the ``joined`` presence publication). With a few hundred handshakes in flight per worker, more
commands are in flight than a pool holds connections; redis-py's default pool then raised
``Too many connections`` at once, which refused connections with 1011 and sent ``unavailable``
errors. A bounded pool that makes the extra commands wait their turn must admit everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.redis.fleet import ROOM
from tests.support.clients import EventReader
from tests.support.servers import GatewayProcess, scaled

pytestmark = pytest.mark.redis

STORM = 360
"""Handshakes started at once: well over redis-py's old 100-connection limit per worker (the
kernel spreads them over the two workers), modest enough for a 2-core machine."""


class StormClient(EventReader):
    """A JSON client that keeps only what the test asserts on: its ``joined`` ack, error
    frames, chat messages and its close code (the lobby's presence events are counted only)."""

    def __init__(self, name: str, ws: ClientConnection) -> None:
        self.name = name
        self.joined = asyncio.Event()
        self.errors: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.presence_events = 0
        super().__init__(ws, name=f"storm-{name}")

    def record(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "joined" and event.get("room") == ROOM:
            self.joined.set()
        elif kind == "error":
            self.errors.append(event)
        elif kind == "message":
            self.messages.append(event)
        elif kind == "presence":
            self.presence_events += 1

    def got(self, text: str) -> bool:
        return any(m["text"] == text for m in self.messages)

    async def wait(self, done: Callable[[], object], seconds: float) -> bool:
        """Until ``done()`` or the connection closes, bounded; returns ``done()``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(scaled(seconds)):
                while not done() and not self.closed:
                    await self.next_change()
        return bool(done())

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(scaled(10)):
                await self.ws.close()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


async def open_client(server: GatewayProcess, name: str, start: asyncio.Event) -> StormClient:
    await start.wait()  # every handshake starts in the same tick
    ws = await connect(
        server.ws_url(f"/ws/{name}"), open_timeout=scaled(60), max_queue=None, close_timeout=5
    )
    return StormClient(name, ws)


async def test_connect_storm_admits_everyone_and_delivers_to_all(fleet: GatewayProcess) -> None:
    start = asyncio.Event()
    opening = [
        asyncio.create_task(open_client(fleet, f"storm{n:03d}", start)) for n in range(STORM)
    ]
    start.set()
    outcomes = await asyncio.gather(*opening, return_exceptions=True)
    clients = [outcome for outcome in outcomes if isinstance(outcome, StormClient)]
    try:
        refused = [repr(outcome) for outcome in outcomes if not isinstance(outcome, StormClient)]
        assert not refused, f"{len(refused)} of {STORM} handshakes failed: {refused[:3]}"

        joined = await asyncio.gather(
            *(client.wait(client.joined.is_set, 60) for client in clients)
        )
        closed = sorted(
            {c.close_code for c in clients if c.reader.done()}, key=lambda code: code or 0
        )
        closes = [c.close_code for c in clients if c.reader.done()]
        unavailable = [e for c in clients for e in c.errors if e.get("code") == "unavailable"]
        log = fleet.log()
        problems = {
            "not joined": joined.count(False),
            "closed": len(closes),
            "closed with 1011": closes.count(1011),
            "close codes": closed,
            "unavailable errors": len(unavailable),
            "'Too many connections' in the log": log.count("Too many connections"),
            "'No connection available' in the log": log.count("No connection available"),
        }
        summary = ", ".join(f"{what}: {count}" for what, count in problems.items())
        assert all(joined), summary
        assert not closes, summary
        assert not unavailable, f"{summary}; {unavailable[:3]}"
        assert not [c.errors for c in clients if c.errors], summary
        assert "Too many connections" not in log, summary

        # Everyone is in the lobby on one of the two workers: one message reaches them all.
        sender = clients[0]
        await sender.ws.send(json.dumps({"type": "message", "room": ROOM, "text": "after"}))
        received = await asyncio.gather(
            *(client.wait(functools.partial(client.got, "after"), 30) for client in clients)
        )
        missing = [c.name for c, got in zip(clients, received, strict=True) if not got]
        assert not missing, f"{len(missing)} of {STORM} never got the message: {missing[:5]}"
        assert not [c for c in clients if c.reader.done()], "a connection closed during fan-out"
    finally:
        await asyncio.gather(*(client.close() for client in clients))
