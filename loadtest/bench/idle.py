"""The idle run: K connections that say nothing, what each costs the server and whether the
server still answers every one; and the permessage-deflate probe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from loadtest.bench.model import Result
from loadtest.bench.waits import wait_stable, wait_until
from loadtest.servers import Server
from loadtest.wsgen import Stats, WSClient, connect, connect_many


async def run_idle(
    server: Server,
    count: int,
    label: str,
    path: str,
    idle_s: float,
    on_open: Callable[[int, WSClient], None] | None = None,
) -> Result:
    result = Result(label=label, server=server.label, scenario="idle", load=f"{count} idle")
    stats = Stats()
    host, port = server.host, server.port
    # Warm up lazily imported code paths so the baseline RSS already includes them.
    warm = await connect_many(stats, host, port, [path.format(i=f"warm{i}") for i in range(5)])
    for c in warm:
        c.close()
    await wait_until(lambda: all(c.closed.done() for c in warm), 5.0)
    await wait_stable(server.rss_bytes, quiet=0.5, deadline=5.0)
    rss0 = server.rss_bytes()
    t_connect = time.monotonic()
    clients: list[WSClient] = []
    try:
        clients = await connect_many(
            stats,
            host,
            port,
            [path.format(i=i) for i in range(count)],
            concurrency=100,
            on_open=on_open,
        )
        result.notes.append(f"{count} handshakes in {time.monotonic() - t_connect:.1f} s")
        await wait_stable(lambda: stats.frames, quiet=1.0, deadline=120.0)
        # Idle: what does the server burn with nothing to do (heartbeat timers, …)?
        c0, t0 = server.cpu_seconds(), time.monotonic()
        await asyncio.sleep(idle_s)
        result.idle_cpu_util = (server.cpu_seconds() - c0) / (time.monotonic() - t0)
        # Every connection still answered by the server?
        pongs0 = stats.pongs
        for c in clients:
            c.ping()
        await wait_until(lambda: stats.pongs - pongs0 >= count, 60.0)
        result.alive = stats.pongs - pongs0
        rss1 = server.rss_bytes()
        result.connections = sum(1 for c in clients if c.is_open)
        result.rss_base_mib = rss0 / 2**20
        result.rss_loaded_mib = rss1 / 2**20
        result.rss_per_conn_kib = (rss1 - rss0) / count / 1024
        result.errors = stats.error_frames
        result.last_error = stats.last_error
        result.closes = {str(k): v for k, v in stats.closes.items()}
        result.processes = len(server.pids())
    finally:
        if server.popen is not None:
            server.stop()
        for c in clients:
            c.abort()
    return result


def move_to_own_room(index: int, client: WSClient) -> None:
    """Join a room of one's own and leave the lobby (JSON wire format).

    Every join to the lobby is announced to the whole lobby, and the join answer lists everyone
    online: connecting 20k clients to one room is O(N²) work and bytes. Idle connections move to
    a room each right after the handshake, so the lobby never holds more than the handshakes in
    flight.
    """
    client.send_text(f'{{"type":"join","room":"idle-{index}"}}')
    client.send_text('{"type":"leave","room":"lobby"}')


async def deflate_offer_accepted(server: Server) -> bool:
    """Does the server accept permessage-deflate when a client (a browser) offers it?"""
    client = await connect(
        Stats(), server.host, server.port, "/ws/deflate-probe", offer_deflate=True
    )
    accepted = client.deflate_accepted
    client.abort()
    return accepted
