"""The observability suite's fleet on Redis (the test's key prefix, info logs, a short drain),
and a client that collects events (the rest is tests/support/fleet.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection

from tests.support.clients import EventReader, of_type, open_ws
from tests.support.fleet import fleet as start_fleet
from tests.support.fleet import fleet_env
from tests.support.servers import GatewayProcess, scaled


@contextmanager
def fleet(
    redis_url: str, env: dict[str, str] | None = None, workers: int = 2
) -> Iterator[GatewayProcess]:
    """``gateway serve --workers N`` on Redis (the test's key prefix), JSON logs, short drain."""
    full = fleet_env(
        redis_url, {"GATEWAY_LOG_LEVEL": "info", "GATEWAY_DRAIN_TIMEOUT": "3"}, env or {}
    )
    with start_fleet(full, workers) as server:
        yield server


class Listener(EventReader):
    """A chat client that collects the events for the test to wait on."""

    def __init__(self, ws: ClientConnection) -> None:
        super().__init__(ws, name="listener")

    @classmethod
    async def connect(cls, server: GatewayProcess, user: str) -> Listener:
        listener = cls(await open_ws(server.ws_url(f"/ws/{user}")))
        await listener.wait_for(of_type("joined", room="lobby"))
        return listener

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], count: int = 1, within: float = 10
    ) -> list[dict[str, Any]]:
        """Until ``count`` events match (all of them since the connection opened)."""
        async with asyncio.timeout(scaled(within)):
            while True:
                matching = [event for event in self.events if predicate(event)]
                if len(matching) >= count:
                    return matching
                if self.closed:
                    raise AssertionError(f"closed with {len(matching)}/{count} matching events")
                await self.next_change()

    async def wait_dropped(self, within: float = 15) -> None:
        async with asyncio.timeout(scaled(within)):
            await self.ended.wait()
