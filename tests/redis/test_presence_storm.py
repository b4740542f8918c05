"""A join storm into one room: every member hears about it in one event per window, not one per
join, on one process and across two workers on Redis, and nobody's arrival is lost."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.support.clients import EventReader, open_ws
from tests.support.servers import GatewayProcess, start_gateway

ROOM = "storm"
JOINERS = 40
WINDOW_MS = 250


async def member(server: GatewayProcess, name: str) -> EventReader:
    client = EventReader(await open_ws(server.ws_url(f"/ws/{name}")), name=name)
    await client.send({"type": "join", "room": ROOM})
    await client.until(lambda: client.has("joined", room=ROOM), 15, f"{name} in {ROOM}")
    return client


def storm_presence(client: EventReader) -> list[dict[str, Any]]:
    return [e for e in client.events if e.get("type") == "presence" and e.get("room") == ROOM]


def arrivals(events: list[dict[str, Any]]) -> set[str]:
    named = {e["user"] for e in events if e.get("event") == "joined"}
    return named | {user for e in events for user in e.get("joined", ())}


async def storm(server: GatewayProcess, prefix: str) -> None:
    watcher = await member(server, f"{prefix}-watcher")
    started = time.monotonic()
    joiners = await asyncio.gather(*(member(server, f"{prefix}-{n}") for n in range(JOINERS)))
    names = {f"{prefix}-{n}" for n in range(JOINERS)}
    await watcher.until(
        lambda: names <= arrivals(storm_presence(watcher)), 15, "every arrival announced"
    )
    seconds = time.monotonic() - started
    events = storm_presence(watcher)
    windows = seconds / (WINDOW_MS / 1000)
    assert len(events) <= windows + 2, f"{len(events)} events in {seconds:.2f} s"
    assert len(events) < JOINERS, "one event per join: nothing was batched"
    assert events[-1]["online"] == JOINERS + 1
    assert any(e["event"] == "diff" for e in events), events
    for client in [watcher, *joiners]:
        await client.close()


async def test_a_join_storm_on_one_process_costs_one_event_per_window() -> None:
    with start_gateway({"GATEWAY_PRESENCE_BATCH_MS": str(WINDOW_MS)}) as server:
        await storm(server, "solo")


async def test_a_join_storm_across_two_workers_costs_one_event_per_window(
    fleet: GatewayProcess,
) -> None:
    await storm(fleet, "pair")
