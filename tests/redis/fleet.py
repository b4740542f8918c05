"""Chat clients of a gunicorn fleet, and which worker holds each of them.

Which worker accepted a connection is read from the kernel, not from the gateway: the server
end of each client's TCP connection is found in ``/proc/net/tcp`` by the client's port, and its
socket inode among the file descriptors of each worker (``/proc/<pid>/fd``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.servers import GatewayProcess, scaled

ROOM = "lobby"
Event = dict[str, Any]


def worker_pids(master: int) -> set[int]:
    """The live children of the gunicorn master."""
    pids = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == master and fields[0] != "Z":
            pids.add(int(entry.name))
    return pids


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(fd.path)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def connection_owners(
    server_port: int, client_ports: Iterable[int], pids: set[int]
) -> dict[int, int]:
    """client port -> pid of the worker holding the server end of that connection."""
    wanted = set(client_ports)
    inode_of: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rpartition(":")[2], 16)
                remote_port = int(fields[2].rpartition(":")[2], 16)
                inode = int(fields[9])
                if local_port == server_port and remote_port in wanted and inode:
                    inode_of[remote_port] = inode
    owners = {}
    for pid in pids:
        inodes = _socket_inodes(pid)
        for port, inode in inode_of.items():
            if inode in inodes:
                owners[port] = pid
    return owners


class ChatClient:
    """A JSON client that records every event it receives."""

    def __init__(self, name: str, ws: ClientConnection) -> None:
        self.name = name
        self.ws = ws
        self.events: list[Event] = []
        self.pid: int | None = None
        self.close_code: int | None = None
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name=f"client-{name}")

    @classmethod
    async def open(cls, server: GatewayProcess, name: str) -> ChatClient:
        ws = await connect(server.ws_url(f"/ws/{name}"), open_timeout=scaled(10))
        client = cls(name, ws)
        await client.wait(lambda events: any(_joined(e) for e in events), 10, "joined lobby")
        return client

    @property
    def port(self) -> int:
        return int(self.ws.local_address[1])

    @property
    def closed(self) -> bool:
        return self._reader.done()

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                assert isinstance(frame, str)
                self.events.extend(json.loads(line) for line in frame.split("\n") if line)
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            close = self.ws.protocol.close_rcvd
            self.close_code = close.code if close is not None else 1006
            self._changed.set()

    async def send(self, event: Event) -> None:
        await self.ws.send(json.dumps(event))

    async def say(self, text: str) -> None:
        await self.send({"type": "message", "room": ROOM, "text": text})

    async def wait(
        self, condition: Callable[[list[Event]], bool], seconds: float, what: str
    ) -> None:
        try:
            async with asyncio.timeout(scaled(seconds)):
                while not condition(self.events):
                    if self.closed:
                        raise AssertionError(
                            f"{self.name} closed ({self.close_code}) before {what}"
                        )
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: no {what} in {seconds}s: {self.events[-5:]}"
            ) from None

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

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


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
