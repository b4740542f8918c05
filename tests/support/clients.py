"""Chat clients on the ``websockets`` library, for tests against a real server: open, read
events until one matches, wait for the close, and a reader that never stops reading."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.servers import scaled


async def open_ws(url: str, **kwargs: Any) -> ClientConnection:
    return await connect(url, open_timeout=scaled(10), **kwargs)


async def recv_events(ws: ClientConnection, timeout: float = 5) -> list[dict[str, Any]]:
    """One frame's JSON events (the server may batch several, newline-separated)."""
    async with asyncio.timeout(scaled(timeout)):
        frame = await ws.recv()
    assert isinstance(frame, str)
    return [json.loads(line) for line in frame.split("\n") if line]


async def recv_until(
    ws: ClientConnection,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 5,
    limit: int = 10_000,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read events until one matches; returns it and everything read before it."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(scaled(timeout)):
        for _ in range(limit):
            frame = await ws.recv()
            assert isinstance(frame, str)
            for line in frame.split("\n"):
                if not line:
                    continue
                event = json.loads(line)
                if predicate(event):
                    return event, seen
                seen.append(event)
    raise AssertionError(f"no matching event in {limit} frames: {seen[-5:]}")


def of_type(kind: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda event: (
        event.get("type") == kind and all(event.get(key) == value for key, value in fields.items())
    )


def announces(user: str, room: str = "lobby") -> Callable[[dict[str, Any]], bool]:
    """A presence event saying ``user`` joined ``room``: its own, or a window's ``diff``."""
    return lambda event: (
        event.get("type") == "presence"
        and event.get("room") == room
        and (event.get("user") == user or user in event.get("joined", ()))
    )


def departures(event: dict[str, Any], room: str = "lobby") -> list[str]:
    """Who a presence event says left ``room``: its user, or a window's ``diff``."""
    if event.get("type") != "presence" or event.get("room") != room:
        return []
    if event.get("event") == "left":
        return [event["user"]]
    return list(event.get("left", ()))


def arrivals(event: dict[str, Any], room: str = "lobby") -> list[str]:
    """Who a presence event says joined ``room``: its user, or a window's ``diff``."""
    if event.get("type") != "presence" or event.get("room") != room:
        return []
    if event.get("event") == "joined":
        return [event["user"]]
    return list(event.get("joined", ()))


class LobbyView:
    """Who a client believes is in a room: its ``joined`` ack, then every presence event."""

    def __init__(self, room: str = "lobby") -> None:
        self.room = room
        self.users: set[str] = set()
        self.acknowledged = False

    def apply(self, event: dict[str, Any]) -> bool:
        """Take one event in; True once the ack has been seen (the view means something)."""
        if event.get("type") == "joined" and event.get("room") == self.room:
            self.users = set(event.get("online", ()))
            self.acknowledged = True
        self.users.update(arrivals(event, self.room))
        self.users.difference_update(departures(event, self.room))
        return self.acknowledged


def text_announces(user: str) -> Callable[[str], bool]:
    """A text-format line saying ``user`` joined: the seed's sentence, or a window's summary
    (``"a, b and 3 others joined; c left. 9 users online."``) that names them."""

    def says(line: str) -> bool:
        head, found, _ = line.partition(" joined")
        return bool(found) and user in head.replace(" and ", ", ").split(", ")

    return says


async def recv_text_until(
    ws: ClientConnection, predicate: Callable[[str], bool], timeout: float = 5, limit: int = 1000
) -> tuple[str, list[str]]:
    seen: list[str] = []
    async with asyncio.timeout(scaled(timeout)):
        for _ in range(limit):
            frame = await ws.recv()
            assert isinstance(frame, str)
            if predicate(frame):
                return frame, seen
            seen.append(frame)
    raise AssertionError(f"no matching frame in {limit}: {seen[-5:]}")


async def wait_closed(ws: ClientConnection, timeout: float = 5) -> tuple[int | None, str]:
    """Read (and discard) until the server closes; returns the close code and reason."""
    async with asyncio.timeout(scaled(timeout)):
        await ws.wait_closed()
    close = ws.protocol.close_rcvd
    return (close.code, close.reason) if close is not None else (None, "")


class EventReader:
    """A chat connection whose task never stops reading, so it answers pings and its flow
    control never stalls the server's close frame. It records what :meth:`record` keeps (every
    event) and the close code (1006 without a close frame); waiters wake on each frame."""

    def __init__(self, ws: ClientConnection, name: str = "reader") -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.ended = asyncio.Event()
        self.changed = asyncio.Event()
        self.reader = asyncio.create_task(self._read(), name=name)

    @property
    def closed(self) -> bool:
        return self.ended.is_set()

    def record(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                assert isinstance(frame, str)
                for line in frame.split("\n"):
                    if line:
                        self.record(json.loads(line))
                self.changed.set()
        except ConnectionClosed:
            pass
        finally:
            close = self.ws.protocol.close_rcvd
            self.close_code = close.code if close is not None else 1006
            self.ended.set()
            self.changed.set()

    async def next_change(self) -> None:
        """Until another frame arrives or the connection ends (callers bound it in time)."""
        self.changed.clear()
        await self.changed.wait()

    def has(self, kind: str, **fields: Any) -> bool:
        return any(
            e.get("type") == kind and all(e.get(k) == v for k, v in fields.items())
            for e in self.events
        )

    async def until(self, done: Callable[[], bool], seconds: float, what: str) -> None:
        """Until ``done()``; fails naming ``what`` on a close or after ``seconds`` (scaled)."""
        try:
            async with asyncio.timeout(scaled(seconds)):
                while not done():
                    if self.closed:
                        raise AssertionError(f"closed ({self.close_code}) before {what}")
                    await self.next_change()
        except TimeoutError:
            raise AssertionError(f"no {what} in {seconds}s: {self.events[-3:]}") from None

    async def send(self, event: dict[str, Any] | str) -> None:
        await self.ws.send(event if isinstance(event, str) else json.dumps(event))

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader
