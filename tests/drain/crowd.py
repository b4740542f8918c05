"""A crowd of well-behaved chat clients and a publisher, for rolling-restart tests (the fleet
itself is tests/support/fleet.py).

Each :class:`ResumingClient` does what the contract asks of a client across a drain: on
``reconnect`` it notes ``after_ms``; on the close that follows it waits that long, connects
again and sends ``resume`` from the last id up to which it holds everything. Live messages
newer than the lobby's ``joined`` ack's ``last_id`` may come before the replay of older ones,
so it sets newer ids aside until the ids before them arrive. So what it holds is exactly-once
and in order by construction, and the tests check the rest: that it holds *everything* that was
acknowledged, and that each resumed stream itself had no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.support.servers import scaled

ROOM = "lobby"
MAX_CONNECT_ATTEMPTS = 200
"""With the backoff below, about a minute of refused connections before a client gives up."""


@dataclass
class Leg:
    """One connection of a client, from its open to its close."""

    opened_at: float
    resumed_after: int | None
    raw_ids: list[int] = field(default_factory=list)
    hint_ms: int | None = None
    hint_was_last: bool = False
    """The ``reconnect`` hint was the last thing before the close."""
    close_code: int | None = None
    closed_at: float | None = None
    recovered: bool | None = None


class ResumingClient:
    def __init__(self, name: str, url: Callable[[str], str]) -> None:
        self.name = name
        self.url = url
        self.ids: list[int] = []
        self.ahead: set[int] = set()
        """Ids received before every id between them and ``last_id`` (kept until those come)."""
        self.legs: list[Leg] = []
        self.joined = asyncio.Event()

    @property
    def last_id(self) -> int | None:
        return self.ids[-1] if self.ids else None

    async def run(self) -> None:
        """Stay connected until cancelled, resuming after every close."""
        delay = 0.0
        attempts = 0
        while True:
            await asyncio.sleep(delay)
            try:
                ws = await connect(self.url(f"/ws/{self.name}"), open_timeout=scaled(5))
            except (OSError, InvalidHandshake, TimeoutError):
                attempts += 1
                if attempts > MAX_CONNECT_ATTEMPTS:
                    raise
                delay = min(0.05 * 2 ** min(attempts, 5), 0.5)
                continue
            attempts = 0
            leg = Leg(time.monotonic(), self.last_id)
            self.legs.append(leg)
            try:
                await self._converse(ws, leg)
            finally:
                await ws.close()
            leg.closed_at = time.monotonic()
            # The hint is the server's word on when to come back; without one, back off a bit.
            delay = leg.hint_ms / 1000 if leg.hint_ms is not None else 0.1

    async def _converse(self, ws: ClientConnection, leg: Leg) -> None:
        try:
            # A worker that drains sends a client it accepts away at once: the close may come
            # before the resume is sent (the resume then raised, and the client task died).
            if leg.resumed_after is not None:
                after = str(leg.resumed_after)
                await ws.send(json.dumps({"type": "resume", "room": ROOM, "after": after}))
            async for frame in ws:
                assert isinstance(frame, str)
                for line in frame.split("\n"):
                    if line:
                        self._on_event(json.loads(line), leg)
        except ConnectionClosed:
            pass
        close = ws.protocol.close_rcvd
        leg.close_code = close.code if close is not None else 1006

    def _on_event(self, event: dict[str, object], leg: Leg) -> None:
        kind = event.get("type")
        leg.hint_was_last = kind == "reconnect"
        if kind == "joined" and event.get("room") == ROOM:
            self.joined.set()
        elif kind == "reconnect":
            leg.hint_ms = int(str(event["after_ms"]))
        elif kind == "resumed" and event.get("room") == ROOM:
            leg.recovered = bool(event["recovered"])
        elif kind == "message" and event.get("room") == ROOM:
            seq = int(str(event["id"]))
            leg.raw_ids.append(seq)
            if self.last_id is None or seq == self.last_id + 1:
                self.ids.append(seq)
                for _ in range(len(self.ahead)):
                    if self.ids[-1] + 1 not in self.ahead:
                        break
                    self.ids.append(self.ids[-1] + 1)
                    self.ahead.discard(self.ids[-1])
            elif seq > self.last_id + 1:
                self.ahead.add(seq)

    def resumed_stream_gaps(self) -> list[str]:
        """Problems in what the server sent on each connection.

        A resumed connection gets every id after ``after`` exactly once: live ones newer than
        the ``joined`` ack's ``last_id`` may come before the replay of the older ones, so the ids
        are compared as a set (each once, none missing). A first connection's live ids follow
        one another. A connection sent away (1012) before its resume was answered got live ids
        but not the replay (a drain stops the stream where it is): it says nothing here, its
        next connection resumes from the last id it holds in order.
        """
        problems = []
        for n, leg in enumerate(self.legs):
            ids = leg.raw_ids
            if leg.resumed_after is None:
                for before, after in itertools.pairwise(ids):
                    if after != before + 1:
                        problems.append(f"leg {n}: {before} then {after}")
                        break
                continue
            if len(set(ids)) != len(ids):
                problems.append(f"leg {n}: {len(ids) - len(set(ids))} ids twice")
            if leg.recovered is None and leg.close_code == 1012:
                continue
            expected = set(range(leg.resumed_after + 1, max(ids, default=leg.resumed_after) + 1))
            if missing := sorted(expected - set(ids)):
                problems.append(
                    f"leg {n}: after {leg.resumed_after}, missing {missing[:5]} "
                    f"(recovered {leg.recovered}, closed {leg.close_code})"
                )
        return problems


class Publisher:
    """Posts a message every ``period`` seconds through the HTTP API and keeps the acked ids.

    Each tick starts its request without waiting for the previous one (up to ``in_flight`` at
    once), so a slow moment of the server does not slow the publisher down.
    """

    def __init__(
        self, base_url: Callable[[], str], api_key: str, period: float = 0.02, in_flight: int = 8
    ) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.period = period
        self.in_flight = in_flight
        self.acked: list[int] = []
        self.acked_at: list[float] = []
        self.failures = 0
        self.skipped = 0

    async def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        start = time.monotonic()
        pending: set[asyncio.Task[None]] = set()
        limits = httpx.Limits(max_connections=self.in_flight)
        async with httpx.AsyncClient(headers=headers, timeout=scaled(2), limits=limits) as http:
            try:
                for n in range(1_000_000):
                    await asyncio.sleep(max(start + n * self.period - time.monotonic(), 0))
                    if len(pending) >= self.in_flight:
                        self.skipped += 1
                        continue
                    task = asyncio.create_task(self._post(http, f"m{n}"))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
            finally:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

    async def _post(self, http: httpx.AsyncClient, text: str) -> None:
        try:
            response = await http.post(
                f"{self.base_url()}/api/rooms/{ROOM}/messages", json={"text": text}
            )
        except httpx.HTTPError:
            self.failures += 1
            return
        if response.status_code == 202:
            self.acked.append(int(response.json()["id"]))
            self.acked_at.append(time.monotonic())
        else:
            self.failures += 1


async def stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
