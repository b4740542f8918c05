"""End to end: a real Prometheus on loopback scrapes a running gateway under load, and every
query of every dashboard panel, evaluated through Prometheus' HTTP API exactly as Grafana would
send it (job=gateway, instance=All, $__rate_interval for a 1 s scrape), returns data.

Runs twice: `gateway serve` (one uvicorn process, in-memory broker) and `gateway serve
--workers 2` (gunicorn, Redis broker, prometheus-client multiprocess mode)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from tests.ops.support import (
    dashboard_queries,
    poll,
    run_prometheus,
    substitute,
)

SCRAPE_INTERVAL = "1s"
# Grafana: $__rate_interval = max($__interval + scrape interval, 4 * scrape interval).
RATE_INTERVAL = "10s"
LOAD_CLIENTS = 8
LOAD_SECONDS_MAX = 150.0
QUERY_DEADLINE = 90.0
# Latency panels must show numbers, not just NaN, while messages flow.
MUST_BE_FINITE = ("Broadcast latency", "Delivery latency", "Broadcast recipients")


class Load:
    """Chat clients in a background thread: they send messages (some too large or invalid,
    to produce rejections), read everything the server sends, and reconnect now and then
    (normal closes). Bounded in time; stops when asked."""

    def __init__(self, ws_url: Callable[[str], str]) -> None:
        self.ws_url = ws_url
        self.stop = threading.Event()
        self.stats: Counter[str] = Counter()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, name="ops-load", daemon=True)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "load generator did not stop"

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        deadline = time.monotonic() + LOAD_SECONDS_MAX
        await asyncio.gather(*(self._client(i, deadline) for i in range(LOAD_CLIENTS)))

    async def _client(self, index: int, deadline: float) -> None:
        import websockets

        rounds = 0
        while not self.stop.is_set() and time.monotonic() < deadline and rounds < 1000:
            rounds += 1
            try:
                async with websockets.connect(
                    self.ws_url(f"/ws/load-{index}"), open_timeout=10, close_timeout=5
                ) as ws:
                    self.stats["connected"] += 1
                    reader = asyncio.create_task(self._read(ws))
                    for n in range(40):  # then close normally and reconnect
                        if self.stop.is_set() or time.monotonic() >= deadline:
                            break
                        # Every tenth text is over GATEWAY_MAX_MESSAGE_BYTES: too_large.
                        text = "x" * 5000 if n % 10 == 3 else f"hello {index}/{rounds}/{n}"
                        frame = {"type": "message", "room": "lobby", "text": text}
                        if n % 10 == 7:
                            frame = {"type": "no-such-type"}  # invalid
                        await ws.send(json.dumps(frame))
                        self.stats["sent"] += 1
                        await asyncio.sleep(0.05)  # pacing of a chatty user, not a sync
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reader
            except (TimeoutError, OSError, websockets.WebSocketException) as error:
                self.errors.append(f"client {index}: {error!r}")
                if len(self.errors) > 200:
                    return
                await asyncio.sleep(0.2)

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            for line in str(raw).splitlines():
                with contextlib.suppress(ValueError):
                    self.stats[f"recv:{json.loads(line).get('type')}"] += 1


@contextlib.contextmanager
def gateway_for(broker_url: str | None) -> Iterator[Any]:
    """One ``gateway serve`` process, or two gunicorn workers on the Redis at ``broker_url``."""
    from tests.support.servers import start_gateway

    env = {
        "GATEWAY_RATE_LIMIT": "1000/1",  # rejections come from too_large and invalid frames
        "GATEWAY_IDLE_TIMEOUT": "0",
    }
    workers = 1
    if broker_url is not None:
        env["GATEWAY_BROKER_URL"] = broker_url
        workers = 2
    with start_gateway(env=env, workers=workers) as server:
        yield server


def result_values(data: dict[str, Any]) -> list[float]:
    return [float(sample["value"][1]) for sample in data.get("result", [])]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "mode", ["single", pytest.param("gunicorn-redis", marks=pytest.mark.redis)]
)
def test_every_dashboard_panel_has_data_under_load(
    mode: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    queries = {
        name: substitute(expr, job="gateway", rate_interval=RATE_INTERVAL)
        for name, expr in dashboard_queries()
    }
    assert len(queries) >= 20
    # gunicorn-redis: the shared Redis under a key prefix of this test's own (removed after)
    broker_url = str(request.getfixturevalue("redis_url")) if mode == "gunicorn-redis" else None
    with gateway_for(broker_url) as gateway:
        config = {
            "global": {
                "scrape_interval": SCRAPE_INTERVAL,
                "scrape_timeout": SCRAPE_INTERVAL,
                "evaluation_interval": SCRAPE_INTERVAL,
            },
            "scrape_configs": [
                {
                    "job_name": "gateway",
                    "static_configs": [{"targets": [f"127.0.0.1:{gateway.port}"]}],
                }
            ],
        }
        with run_prometheus(config, tmp_path / "prometheus") as prom, Load(gateway.ws_url) as load:
            poll(prom.targets_up, 30, "Prometheus to scrape the gateway successfully")
            pending = dict(queries)
            last: dict[str, Any] = {}
            deadline = time.monotonic() + QUERY_DEADLINE
            for _ in range(int(QUERY_DEADLINE / 0.5) + 1):
                if not pending or time.monotonic() > deadline:
                    break
                for name, expr in list(pending.items()):
                    data = prom.query(expr)  # a failed query is an error at once
                    values = result_values(data)
                    last[name] = values
                    finite = any(math.isfinite(v) for v in values)
                    if values and (finite or not name.startswith(MUST_BE_FINITE)):
                        del pending[name]
                time.sleep(0.5)
            stats = dict(load.stats)
            errors = load.errors[:5]
        gateway_log = gateway.log()[-3000:]
    assert stats.get("connected", 0) > LOAD_CLIENTS, (stats, errors)
    assert stats.get("recv:message", 0) > 0, (stats, errors)
    assert not pending, (
        "dashboard queries without data:\n"
        + "\n".join(f"  {name}: {expr}  -> {last.get(name)}" for name, expr in pending.items())
        + f"\nload: {stats}\nerrors: {errors}\ngateway log tail:\n{gateway_log}"
    )
