"""One chat run (fanout, latency, stalled, workers): N subscribers and P publishers in a room,
a probe for how many deliveries one message makes, then one measured window at a fixed or
closed-loop rate.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from loadtest import procstat
from loadtest.bench.model import Load, Result, percentile
from loadtest.bench.waits import wait_stable, wait_until
from loadtest.servers import Server, WireFormat
from loadtest.wsgen import Stats, WSClient, connect_many, stamp


def message_text(size: int) -> str:
    mark = stamp()
    return mark + "x" * max(0, size - len(mark))


def encoder(wire: WireFormat, room: str) -> Callable[[int], str]:
    if wire == "text":
        return message_text
    prefix = '{"type":"message","room":"' + room + '","text":"'

    def encode(size: int) -> str:
        return prefix + message_text(size) + '"}'

    return encode


class Pump:
    """Publishes from P connections at a fixed total rate or at max rate (closed loop)."""

    def __init__(
        self,
        publishers: list[WSClient],
        stats: Stats,
        load: Load,
        wire: WireFormat,
        recipients: int,
        max_messages: int = 50_000_000,
    ) -> None:
        self.publishers = publishers
        self.stats = stats
        self.load = load
        self.encode = encoder(wire, load.room)
        self.recipients = max(1, recipients)
        self.max_messages = max_messages
        self.sent = 0
        self.base_deliveries = stats.deliveries
        self.running = True

    def send_one(self) -> None:
        pub = self.publishers[self.sent % len(self.publishers)]
        pub.send_text(self.encode(self.load.msg_bytes))
        self.sent += 1

    async def run(self) -> None:
        start = time.monotonic()
        rate = self.load.rate
        window = self.load.window
        while self.running and self.sent < self.max_messages:
            if rate is None:
                done = (self.stats.deliveries - self.base_deliveries) / self.recipients
                n = int(window - (self.sent - done))
            else:
                n = min(int((time.monotonic() - start) * rate) - self.sent, 1000)
            for _ in range(max(0, n)):
                self.send_one()
            await asyncio.sleep(0.001)


@dataclass
class Window:
    """What the server, the broker, this generator and the cores did in the measured window."""

    wall: float
    deliveries: int
    server_cpu_s: float
    server_user_s: float  # of server_cpu_s, in the server's own code; the rest in the kernel
    gen_cpu_s: float
    broker_cpu_s: float
    core_busy: list[float]


async def run_chat(server: Server, load: Load, label: str, broker: Server | None = None) -> Result:
    """Connect N subscribers + P publishers, publish, measure one window; clients closed after."""
    result = Result(label=label, server=server.label, scenario="chat", load=load.describe())
    stats = Stats()
    n = load.subscribers
    stalled_idx = set(range(n // 2, n // 2 + load.stalled))
    await asyncio.sleep(0)  # let the server settle after its readiness probe
    rss0 = server.rss_bytes()
    clients: list[WSClient] = []
    try:
        subs, pubs = await connect_room(server, load, stats, stalled_idx, clients)
        result.connections = len(clients)
        # Joins/presence fan out too (O(N²) for the seed): wait until they are all delivered.
        await wait_stable(lambda: stats.frames, quiet=0.5, deadline=120.0)
        for i in stalled_idx:
            subs[i].pause()
        await probe(server, load, stats, pubs[0], result, stalled=len(stalled_idx))
        result.rss_loaded_mib = server.rss_bytes() / 2**20
        result.rss_base_mib = rss0 / 2**20
        result.rss_per_conn_kib = (server.rss_bytes() - rss0) / len(clients) / 1024
        per_client_before = [c.delivered for c in clients]

        gc.collect()
        gc.freeze()
        pump = Pump(pubs, stats, load, server.wire, result.recipients)
        window = await measure(server, broker, stats, pump, load)
        gc.unfreeze()

        fill_window(result, window, broker is not None)
        fill_delivery(result, stats, pump, clients, per_client_before, stalled_idx)
        result.processes = len(server.pids())
        if result.gen_cpu_util > 0.9:
            result.notes.append("generator above 90% of its core: it may be the bottleneck")
    finally:
        if server.popen is not None:
            server.stop()  # first: a seed server would broadcast N² "left" messages
        for c in clients:
            c.abort()
    return result


async def connect_room(
    server: Server, load: Load, stats: Stats, stalled_idx: set[int], clients: list[WSClient]
) -> tuple[list[WSClient], list[WSClient]]:
    """Subscribers, then publishers, each added to ``clients`` as soon as they are connected."""
    host, port = server.host, server.port
    n, p = load.subscribers, load.publishers
    run_id = os.urandom(3).hex()  # ids never collide with a previous run's lingering presence
    subs = await connect_many(
        stats,
        host,
        port,
        [server.chat_path(f"sub{run_id}-{i}") for i in range(n)],
        rcvbuf={i: 4096 for i in stalled_idx},
        concurrency=load.connect_concurrency,
    )
    clients.extend(subs)
    pubs = await connect_many(
        stats,
        host,
        port,
        [server.chat_path(f"pub{run_id}-{j}") for j in range(p)],
        concurrency=min(p, load.connect_concurrency),
    )
    clients.extend(pubs)
    if load.room != "lobby" and server.wire == "json":
        for c in clients:
            c.send_text(json.dumps({"type": "join", "room": load.room}))
    return subs, pubs


async def probe(
    server: Server, load: Load, stats: Stats, pub: WSClient, result: Result, stalled: int
) -> None:
    """How many deliveries does one message make here? (``result.recipients``)"""
    n, p = load.subscribers, load.publishers
    before = stats.deliveries
    encode = encoder(server.wire, load.room)
    pub.send_text(encode(load.msg_bytes))
    await wait_until(lambda: stats.deliveries > before, 10.0)
    got = await wait_stable(lambda: stats.deliveries, quiet=0.3, deadline=10.0)
    result.recipients = got - before
    if result.recipients == 0:
        raise RuntimeError(
            f"{result.label}: a published message reached nobody "
            f"(errors: {stats.error_frames} {stats.last_error!r}, closes: {stats.closes})"
        )
    expected_min = n + p - 1 - stalled
    if result.recipients < expected_min:
        result.notes.append(
            f"probe reached {result.recipients} of {n + p} connections (expected ≥ {expected_min})"
        )


async def measure(
    server: Server, broker: Server | None, stats: Stats, pump: Pump, load: Load
) -> Window:
    """Warm up, measure one window, stop publishing, and let what was sent arrive."""
    task = asyncio.create_task(pump.run())
    await asyncio.sleep(load.warmup)
    if task.done():
        task.result()
    d0, (u0, s0), g0 = stats.deliveries, server.cpu_split(), procstat.self_cpu_seconds()
    b0 = broker.cpu_seconds() if broker is not None else 0.0
    k0 = procstat.core_times()
    t0 = time.monotonic()
    stats.reset_latencies()
    stats.recording = True
    await asyncio.sleep(load.duration)
    stats.recording = False
    t1 = time.monotonic()
    d1, (u1, s1), g1 = stats.deliveries, server.cpu_split(), procstat.self_cpu_seconds()
    b1 = broker.cpu_seconds() if broker is not None else 0.0
    core_busy = procstat.core_busy(k0, procstat.core_times())
    pump.running = False
    await task
    # Drain: what was sent should arrive (except to stalled receivers).
    target = pump.sent * pump.recipients
    await wait_until(lambda: stats.deliveries - pump.base_deliveries >= target, 2.0)
    await wait_stable(lambda: stats.deliveries, quiet=1.0, deadline=15.0)
    server_cpu = (u1 + s1) - (u0 + s0)
    return Window(t1 - t0, d1 - d0, server_cpu, u1 - u0, g1 - g0, b1 - b0, core_busy)


def fill_window(result: Result, w: Window, with_broker: bool) -> None:
    result.core_busy = w.core_busy
    result.window_s = w.wall
    result.deliveries = w.deliveries
    result.deliveries_per_s = result.deliveries / w.wall
    result.server_cpu_s = w.server_cpu_s
    result.server_user_s = w.server_user_s
    result.server_sys_s = w.server_cpu_s - w.server_user_s
    result.server_cpu_util = result.server_cpu_s / w.wall
    result.gen_cpu_util = w.gen_cpu_s / w.wall
    if with_broker:
        result.broker_cpu_s = w.broker_cpu_s
    if result.deliveries:
        result.cpu_us_per_delivery = result.server_cpu_s / result.deliveries * 1e6


def fill_delivery(
    result: Result,
    stats: Stats,
    pump: Pump,
    clients: list[WSClient],
    per_client_before: list[int],
    stalled_idx: set[int],
) -> None:
    """Latency percentiles, and the share of what was sent that reached non-stalled receivers."""
    result.sent = pump.sent + 1
    lat = sorted(stats.latencies)
    if lat:
        result.p50_ms = percentile(lat, 0.50) / 1e6
        result.p99_ms = percentile(lat, 0.99) / 1e6
        result.max_ms = lat[-1] / 1e6
    others = [i for i in range(len(clients)) if i not in stalled_idx]
    got_others = sum(clients[i].delivered - per_client_before[i] for i in others)
    # The probe reached recipients - len(others) stalled/echo-less ones; count per receiver.
    per_msg = result.recipients  # receivers among `others` for each message
    if pump.sent and per_msg:
        result.delivered_ratio = got_others / (pump.sent * per_msg)
    result.errors = stats.error_frames
    result.last_error = stats.last_error
    result.closes = {str(k): v for k, v in stats.closes.items()}
    result.unexpected_eof = stats.unexpected_eof
