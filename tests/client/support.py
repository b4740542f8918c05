"""What the client's live tests share: a publisher on the HTTP API and a recorder of a client's
events, each bounded in time and count."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from gateway.client import Client, Disconnected, Event, Message, Recovered
from tests.support.servers import scaled

API_KEY = "client-tests-api-key-" + "k" * 16


@dataclass
class Publisher:
    """Posts ``text`` messages to ``room`` through ``POST /api/rooms/{room}/messages`` every
    ``period`` seconds until stopped, one request at a time; keeps the ids the API acknowledged
    and counts the posts whose fate it cannot know (an error or a timeout: maybe published)."""

    base_url: str
    room: str
    period: float = 0.02
    acked: list[int] = field(default_factory=list)
    uncertain: int = 0
    refused: int = 0

    stopping: bool = False

    async def run(self, limit: int = 5000) -> None:
        """Until :meth:`stop` (never cancelled mid-post: that post's fate would be unknown)."""
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(headers=headers, timeout=scaled(3)) as http:
            for n in range(limit):
                if self.stopping:
                    return
                started = time.monotonic()
                await self._post(http, f"m{n}")
                await asyncio.sleep(max(self.period - (time.monotonic() - started), 0))

    async def _post(self, http: httpx.AsyncClient, text: str) -> None:
        url = f"{self.base_url}/api/rooms/{self.room}/messages"
        try:
            response = await http.post(url, json={"text": text})
        except httpx.HTTPError:
            self.uncertain += 1
            return
        if response.status_code == 202:
            self.acked.append(int(response.json()["id"]))
        elif response.status_code >= 500:
            self.refused += 1  # 503: the broker could not take it, nothing was published
        else:
            raise AssertionError(f"the API answered {response.status_code}: {response.text}")


class Recorder:
    """Reads every event of ``client`` in a task of its own, as a program would."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.events: list[Event] = []
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        async for event in self.client:
            self.events.append(event)
            self.changed.set()
        self.changed.set()

    def ids(self, room: str) -> list[int]:
        return [int(e.id) for e in self.events if isinstance(e, Message) and e.room == room]

    def disconnects(self) -> list[Disconnected]:
        return [e for e in self.events if isinstance(e, Disconnected)]

    def gaps(self) -> list[Recovered]:
        return [e for e in self.events if isinstance(e, Recovered)]

    async def until(self, done: Callable[[], bool], seconds: float, what: str) -> None:
        """Until ``done()``, woken by each new event; fails naming ``what`` after ``seconds``."""
        try:
            async with asyncio.timeout(scaled(seconds)):
                for _ in range(1_000_000):
                    if done():
                        return
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            pass
        raise AssertionError(f"{self.client.user}: no {what} in {seconds} s: {self.events[-5:]}")

    async def close(self) -> None:
        await self.client.close()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(scaled(5)):
                await self.task


def exactly_once_in_order(ids: list[int], acked: list[int], uncertain: int) -> list[str]:
    """Problems with what a client holds against what the API acknowledged: every id once, in
    increasing order, every acknowledged one present; ids beyond those only as many as posts
    whose answer was lost."""
    problems = []
    if ids != sorted(set(ids)):
        twice = len(ids) - len(set(ids))
        problems.append(f"out of order or repeated ({twice} repeated)")
    if missing := sorted(set(acked) - set(ids)):
        problems.append(f"{len(missing)} acknowledged ids missing, first {missing[:5]}")
    if len(set(ids) - set(acked)) > uncertain:
        problems.append(f"{len(set(ids) - set(acked))} unacknowledged ids, {uncertain} uncertain")
    return problems
