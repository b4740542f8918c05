"""Sentinel failover and the price of ``GATEWAY_BROKER_MIN_REPLICAS``, measured in one run.

    python -m loadtest.failover                # ≈ 1 min; prints a Markdown table, writes JSON

1. Publish latency: one worker's broker publishing kept messages one after another to the
   primary of a Sentinel topology, with ``min_replicas`` 0 and 1 (p50/p99 of each call).
2. Failover: ``gateway serve --workers 2`` on that topology, clients in the lobby, a publisher
   posting through the API at a fixed pace; the primary gets SIGKILL. Outage = kill → the first
   202 after it. Then every client resumes from its newest id, and each acknowledged id is
   looked for in every client: lost (missing), duplicated (received twice), and extra
   (delivered though its post answered 503: a publish cut by the crash has an unknown outcome).
   Run once with ``GATEWAY_BROKER_MIN_REPLICAS=1`` and once with 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.broker.base import Envelope
from gateway.broker.redis import RedisBroker
from loadtest.servers import RESULTS_DIR, free_port
from tests.support.topology import SentinelTopology, sentinel_topology

API_KEY = "failover-bench"
ROOM = "lobby"


@dataclass
class FailoverResult:
    min_replicas: int
    outage_s: float
    acknowledged: int
    refused: int
    lost: int
    duplicated: int
    extra: int
    reused: int
    """Ids acknowledged twice (for two texts): what a failover that lost the sequence does."""
    clients: int
    missing: list[int]
    """Acknowledged ids some client never got (for a look at where they sit)."""


@dataclass
class Client:
    ws: ClientConnection
    ids: list[int] = field(default_factory=list)
    resumed: asyncio.Event = field(default_factory=asyncio.Event)

    async def read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in self.ws:
                for line in str(frame).split("\n"):
                    event = json.loads(line) if line else {}
                    if event.get("type") == "message" and event.get("room") == ROOM:
                        self.ids.append(int(event["id"]))
                    elif event.get("type") == "resumed":
                        self.resumed.set()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def publish_latency(
    topology: SentinelTopology, min_replicas: int, count: int
) -> dict[str, Any]:
    url = topology.url(f"bench-{uuid.uuid4().hex[:8]}")
    broker = RedisBroker(url, lambda _: None, 100, min_replicas=min_replicas)
    await broker.start()
    timings: list[float] = []
    try:
        for n in range(count + 200):
            event = {"type": "message", "room": "bench", "from": "b", "text": f"m{n}"}
            envelope = Envelope("room:bench", event, time.time())
            started = time.perf_counter()
            await broker.publish(envelope, keep=True)
            if n >= 200:  # warm-up: connections and script loads
                timings.append(time.perf_counter() - started)
    finally:
        await broker.aclose()
    return {
        "min_replicas": min_replicas,
        "count": count,
        "p50_ms": round(statistics.median(timings) * 1000, 3),
        "p99_ms": round(percentile(timings, 0.99) * 1000, 3),
    }


def start_fleet(url: str, min_replicas: int, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_BROKER_URL": url,
        "GATEWAY_BROKER_MIN_REPLICAS": str(min_replicas),
        "GATEWAY_API_KEY": API_KEY,
        "GATEWAY_RATE_LIMIT": "0",
        "GATEWAY_HISTORY_SIZE": "1000",
        "GATEWAY_SEND_QUEUE": "5000",
        "GATEWAY_DRAIN_TIMEOUT": "2",
    }
    gateway = Path(sys.executable).with_name("gateway")
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(gateway), "serve", "--workers", "2"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process, port
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the fleet never became ready; see {log}")


async def failover(
    topology: SentinelTopology, min_replicas: int, clients: int, rate: float, log: Path
) -> FailoverResult:
    process, port = start_fleet(topology.url(f"bench-{uuid.uuid4().hex[:8]}"), min_replicas, log)
    base = f"http://127.0.0.1:{port}"
    readers: list[Client] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for n in range(clients):
            reader = Client(await connect(f"ws://127.0.0.1:{port}/ws/c{n}", open_timeout=10))
            readers.append(reader)
            tasks.append(asyncio.create_task(reader.read()))
        acked: list[int] = []
        refused = 0
        killed_at: float | None = None
        first_ack_after: float | None = None
        async with httpx.AsyncClient(
            timeout=10, headers={"Authorization": f"Bearer {API_KEY}"}
        ) as http:
            for n in range(int(rate * 120)):
                if killed_at is None and n == int(rate * 3):
                    old = topology.primary()
                    old.kill()
                    killed_at = time.monotonic()
                answer = await http.post(
                    f"{base}/api/rooms/{ROOM}/messages", json={"text": f"m{n}"}
                )
                if answer.status_code == 202:
                    acked.append(int(answer.json()["id"]))
                    if killed_at is not None and first_ack_after is None:
                        first_ack_after = time.monotonic() - killed_at
                else:
                    refused += 1
                if first_ack_after is not None and len(acked) >= int(rate * 6):
                    break
                await asyncio.sleep(1 / rate)  # the publisher's pace
        newest = max(acked)
        for _ in range(400):  # up to 20 s for live delivery to reach the newest id
            if all(newest in r.ids for r in readers):
                break
            await asyncio.sleep(0.05)
        for reader in readers:
            after = max(reader.ids, default=0)
            await reader.ws.send(json.dumps({"type": "resume", "room": ROOM, "after": str(after)}))
        for reader in readers:
            await asyncio.wait_for(reader.resumed.wait(), 20)
        wanted = set(acked)
        lost = sum(len(wanted - set(r.ids)) for r in readers)
        duplicated = sum(len(r.ids) - len(set(r.ids)) for r in readers)
        extra = max(len(set(r.ids) - wanted) for r in readers)
        missing = sorted(set().union(*(wanted - set(r.ids) for r in readers)))
        topology.revive(old)
        outage = round(first_ack_after or -1, 2)
        reused = len(acked) - len(set(acked))
        return FailoverResult(
            min_replicas, outage, len(acked), refused, lost, duplicated, extra, reused, clients,
            missing,
        )  # fmt: skip
    finally:
        for reader in readers:
            await reader.ws.close()
        for task in tasks:
            task.cancel()
        process.terminate()
        process.wait(timeout=30)


async def main_async(options: argparse.Namespace) -> dict[str, Any]:
    log = Path(tempfile.mkdtemp(prefix="failover-")) / "gateway.log"
    with sentinel_topology() as topology:
        latency = [await publish_latency(topology, n, options.count) for n in (0, 1)]
        runs = [
            asdict(await failover(topology, n, options.clients, options.rate, log)) for n in (1, 0)
        ]
    return {"latency": latency, "failover": runs, "log": str(log)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="publishes per latency run")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rate", type=float, default=100.0, help="API posts per second")
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 0], help="MIN_REPLICAS values")
    options = parser.parse_args()
    result = asyncio.run(main_async(options))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "failover.json").write_text(json.dumps(result, indent=2))
    print("| MIN_REPLICAS | publish p50 | publish p99 |\n|---|---|---|")
    for row in result["latency"]:
        print(f"| {row['min_replicas']} | {row['p50_ms']} ms | {row['p99_ms']} ms |")
    print(
        "\n| MIN_REPLICAS | outage s (kill → first 202) | acknowledged | refused (503) | lost "
        "| duplicated | extra | reused |\n|---|---|---|---|---|---|---|---|"
    )
    for run in result["failover"]:
        cells = ["min_replicas", "outage_s", "acknowledged", "refused", "lost", "duplicated"]
        print("| " + " | ".join(str(run[key]) for key in [*cells, "extra", "reused"]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
