"""The Redis suite's fleet: its settings, and chat clients spread over both workers.

Which worker accepted a connection is read from the kernel, not from the gateway
(:func:`tests.support.fleet.connection_owners`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection

from tests.support.clients import EventReader, open_ws
from tests.support.fleet import connection_owners, worker_pids
from tests.support.fleet import fleet_env as base_fleet_env
from tests.support.servers import GatewayProcess

ROOM = "lobby"
PRESENCE_TTL = 2.0
MAX_FRAME = 4096
Event = dict[str, Any]


def fleet_env(broker_url: str) -> dict[str, str]:
    """The Redis suite's fleet: short presence TTL and drain, no rate limit, a small frame cap."""
    return base_fleet_env(
        broker_url,
        {
            "GATEWAY_PRESENCE_TTL": str(PRESENCE_TTL),
            "GATEWAY_RATE_LIMIT": "1000/1",
            "GATEWAY_IDLE_TIMEOUT": "0",
            "GATEWAY_HISTORY_SIZE": "1000",
            "GATEWAY_MAX_FRAME_BYTES": str(MAX_FRAME),
            "GATEWAY_DRAIN_TIMEOUT": "3",
            "GATEWAY_DRAIN_JITTER": "0",
        },
    )


class ChatClient(EventReader):
    """A JSON client that records every event it receives."""

    def __init__(self, name: str, ws: ClientConnection) -> None:
        super().__init__(ws, name=f"client-{name}")
        self.name = name
        self.pid: int | None = None

    @classmethod
    async def open(cls, server: GatewayProcess, name: str) -> ChatClient:
        client = cls(name, await open_ws(server.ws_url(f"/ws/{name}")))
        await client.wait(lambda events: any(_joined(e) for e in events), 10, "joined lobby")
        return client

    @property
    def port(self) -> int:
        return int(self.ws.local_address[1])

    async def say(self, text: str) -> None:
        await self.send({"type": "message", "room": ROOM, "text": text})

    async def wait(
        self, condition: Callable[[list[Event]], bool], seconds: float, what: str
    ) -> None:
        """Until ``condition(events)``: :meth:`EventReader.until`, naming this client."""
        await self.until(lambda: condition(self.events), seconds, f"{what} at {self.name}")

    async def wait_messages(self, count: int, seconds: float = 15) -> None:
        await self.wait(lambda _: len(self.messages()) >= count, seconds, f"{count} messages")

    async def wait_closed(self, seconds: float = 10) -> None:
        await self.wait(lambda _: self.closed, seconds, "the close")

    async def wait_holding(self, ids: set[str], seconds: float = 10) -> None:
        await self.wait(lambda _: ids <= self.held(), seconds, f"ids {sorted(ids)}")

    def held(self) -> set[str]:
        """What a client shows: like any client it drops an id at or below the newest it has
        (a resume repeats what arrived live after the client chose its ``after``)."""
        shown: list[int] = []
        for seq in self.message_ids():
            if not shown or seq > shown[-1]:
                shown.append(seq)
        return {str(seq) for seq in shown}

    def messages(self) -> list[Event]:
        return [e for e in self.events if e.get("type") == "message" and e.get("room") == ROOM]

    def message_ids(self) -> list[int]:
        return [int(e["id"]) for e in self.messages()]

    def of_type(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.get("type") == kind]


def _joined(event: Event) -> bool:
    return event.get("type") == "joined" and event.get("room") == ROOM


async def spread_clients(
    server: GatewayProcess, count: int, prefix: str = "u", minimum: int = 3, attempts: int = 200
) -> list[ChatClient]:
    """``count`` connected clients, at least ``minimum`` on each worker, each with its pid.

    The kernel decides which worker accepts a connection; if the first round is lopsided,
    clients of the crowded worker are replaced (by new names) until both have their share.
    """
    pids = worker_pids(server.pid)
    assert len(pids) == 2, f"expected two workers, found {pids}"
    names = (f"{prefix}{n:03d}" for n in range(count + attempts))
    clients: list[ChatClient] = []
    for first in range(0, count, 8):
        batch = min(8, count - first)
        clients += await asyncio.gather(
            *(ChatClient.open(server, next(names)) for _ in range(batch))
        )
    for _ in range(attempts):
        owners = connection_owners(server.port, [c.port for c in clients], pids)
        for client in clients:
            client.pid = owners.get(client.port)
        assert all(c.pid is not None for c in clients), "a connection without a worker"
        per_worker = {pid: [c for c in clients if c.pid == pid] for pid in pids}
        if all(len(held) >= minimum for held in per_worker.values()):
            return clients
        crowded = max(per_worker.values(), key=len)
        leaving = crowded[0]
        clients.remove(leaving)
        await leaving.close()
        clients.append(await ChatClient.open(server, next(names)))
    raise AssertionError(f"connections never spread over both workers {pids}")
