"""One receiver that never reads must not slow down or starve anybody else."""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.client import ClientConnection

from tests.support.clients import announces, open_ws, recv_events, recv_until
from tests.support.metrics import metric
from tests.support.rawws import raw_handshake
from tests.support.servers import scaled, start_gateway, wait_until

CLOSED = "gateway_connections_closed_total"
READERS = 50
FLOOD = 1000
BURST = 50
TEXT = "f" * 900


class Progress:
    """How far every reader has got, so the publisher can run exactly one burst ahead."""

    def __init__(self, readers: int) -> None:
        self.ids: list[list[int]] = [[] for _ in range(readers)]
        self.target = 0
        self.behind: set[int] = set()
        self.all_there = asyncio.Event()

    async def reached(self, count: int) -> None:
        self.target = count
        self.behind = {n for n, ids in enumerate(self.ids) if len(ids) < count}
        self.all_there.clear()
        if self.behind:
            try:
                async with asyncio.timeout(scaled(30)):
                    await self.all_there.wait()
            except TimeoutError:
                lengths = sorted(map(len, self.ids))[:5]
                raise AssertionError(f"readers stuck at {lengths} of {count}") from None

    async def read(self, index: int, ws: ClientConnection) -> None:
        ids = self.ids[index]
        for _ in range(FLOOD * 2):
            for event in await recv_events(ws, timeout=30):
                if event["type"] == "message":
                    ids.append(int(event["id"]))
            if len(ids) >= self.target and index in self.behind:
                self.behind.discard(index)
                if not self.behind:
                    self.all_there.set()
            if len(ids) >= FLOOD:
                return


async def test_stalled_receiver_is_cut_off_while_fifty_others_get_everything() -> None:
    env = {
        "GATEWAY_RATE_LIMIT": "0",
        "GATEWAY_SEND_QUEUE": "200",
        "GATEWAY_SOCKET_SEND_BUFFER": "65536",
        "GATEWAY_IDLE_TIMEOUT": "0",
    }
    with start_gateway(env) as server:
        stalled = raw_handshake(server.port, "/ws/stalled", receive_buffer=4096)
        readers = [
            await open_ws(server.ws_url(f"/ws/reader-{n}"), max_queue=None) for n in range(READERS)
        ]
        publisher = await open_ws(server.ws_url("/ws/publisher"), max_queue=None)
        for ws in readers:
            await recv_until(ws, announces("publisher"), timeout=20)
        listeners = [*readers, publisher]
        progress = Progress(len(listeners))
        tasks = [asyncio.create_task(progress.read(n, ws)) for n, ws in enumerate(listeners)]
        for start in range(0, FLOOD, BURST):
            for n in range(start, start + BURST):
                await publisher.send(json.dumps({"type": "message", "text": f"{n}:{TEXT}"}))
            await progress.reached(start + BURST)
        await asyncio.gather(*tasks)
        first = progress.ids[0]
        assert len(first) == FLOOD
        assert first == sorted(first)
        assert all(ids == first for ids in progress.ids)
        wait_until(
            lambda: metric(server.base_url, CLOSED, reason="slow_consumer") == 1,
            10,
            "the stalled receiver was not closed as a slow consumer",
        )
        stalled.close()
        await asyncio.gather(*(ws.close() for ws in listeners))
