"""A two-worker gateway on Redis (the test's key prefix) and what its logs say of its workers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.support.clients import of_type, open_ws
from tests.support.servers import GatewayProcess, free_port, scaled, start_gateway, wait_until


@contextmanager
def fleet(
    redis_url: str, env: dict[str, str] | None = None, workers: int = 2
) -> Iterator[GatewayProcess]:
    """``gateway serve --workers N`` on Redis (the test's key prefix), JSON logs, short drain."""
    full = {
        "GATEWAY_BROKER_URL": redis_url,
        "GATEWAY_LOG_FORMAT": "json",
        "GATEWAY_LOG_LEVEL": "info",
        "GATEWAY_DRAIN_TIMEOUT": "3",
        **(env or {}),
    }
    with start_gateway(full, workers=workers) as server:
        yield server


REPO = Path(__file__).resolve().parents[2]


@contextmanager
def plain_gunicorn(redis_url: str, env: dict[str, str] | None = None) -> Iterator[GatewayProcess]:
    """What the image runs: ``gunicorn -c ops/gunicorn.conf.py gateway.app:app``, 2 workers."""
    port = free_port()
    full = {
        **os.environ,
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_WORKERS": "2",
        "GATEWAY_BROKER_URL": redis_url,
        "GATEWAY_LOG_FORMAT": "json",
        **(env or {}),
    }
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
        prefix="gateway-gunicorn-", suffix=".log", delete=False
    )
    command = [
        str(Path(sys.executable).with_name("gunicorn")),
        "-c",
        "ops/gunicorn.conf.py",
        "gateway.app:app",
    ]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=full,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = GatewayProcess(process, port, Path(log.name), env or {})
    try:
        wait_until(lambda: _healthy(server), 30, f"gunicorn on :{port} never became healthy")
        yield server
    finally:
        server.stop()


def _healthy(server: GatewayProcess) -> bool:
    if not server.alive():
        raise RuntimeError(f"gunicorn exited:\n{server.log()}")
    try:
        return server.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def log_records(server: GatewayProcess) -> list[dict[str, Any]]:
    records = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def pid_of_users(server: GatewayProcess) -> dict[str, int]:
    """The worker pid serving each user's latest connection, from ``connection opened`` lines."""
    return {
        record["user"]: record["pid"]
        for record in log_records(server)
        if record.get("event") == "connection opened"
    }


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (the gunicorn master and its workers)."""
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    frontier.append(child)
    return found


class Listener:
    """A chat client that never stops reading, so it answers pings and its flow control never
    stalls the server's close frame; it collects the events for the test to wait on."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, server: GatewayProcess, user: str) -> Listener:
        listener = cls(await open_ws(server.ws_url(f"/ws/{user}")))
        await listener.wait_for(of_type("joined", room="lobby"))
        return listener

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                assert isinstance(frame, str)
                self.events.extend(json.loads(line) for line in frame.split("\n") if line)
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            self._changed.set()

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], count: int = 1, within: float = 10
    ) -> list[dict[str, Any]]:
        """Until ``count`` events match (all of them since the connection opened)."""
        async with asyncio.timeout(scaled(within)):
            while True:
                matching = [event for event in self.events if predicate(event)]
                if len(matching) >= count:
                    return matching
                if self.closed.is_set():
                    raise AssertionError(f"closed with {len(matching)}/{count} matching events")
                self._changed.clear()
                await self._changed.wait()

    async def send(self, event: dict[str, Any] | str) -> None:
        await self.ws.send(event if isinstance(event, str) else json.dumps(event))

    async def close(self) -> None:
        await self.ws.close()
        await self._task

    async def wait_dropped(self, within: float = 15) -> None:
        async with asyncio.timeout(scaled(within)):
            await self.closed.wait()


async def poll_until(predicate: Callable[[], object], within: float, message: str) -> None:
    """``wait_until`` for async tests: the event loop (and every client's pongs) keeps running."""
    interval = 0.02
    try:
        async with asyncio.timeout(scaled(within)):
            for _ in range(int(scaled(within) / interval) + 1):
                if predicate():
                    return
                await asyncio.sleep(interval)
    except TimeoutError:
        pass
    raise AssertionError(message)
