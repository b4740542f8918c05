"""/metrics under gunicorn: 2 workers on Redis, a scrape = the whole host, even after kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from tests.observability.fleet import Listener, fleet
from tests.observability.spec import PROCESS_METRICS, contract_problems
from tests.support.clients import of_type
from tests.support.fleet import descendants, pid_of_users, plain_gunicorn
from tests.support.servers import GatewayProcess, scaled

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

CLIENTS = 30
CLOSED = 10


class Scraper:
    """Scrapes /metrics (whichever worker answers) and checks no counter ever goes down."""

    def __init__(self, server: GatewayProcess) -> None:
        self.server = server
        self.last: Samples = {}
        self.scrapes = 0

    async def scrape(self) -> Samples:
        async with httpx.AsyncClient(timeout=scaled(5)) as client:
            text = (await client.get(self.server.base_url + "/metrics")).text
        samples: Samples = {}
        for family in text_string_to_metric_families(text):
            monotonic = family.type in ("counter", "histogram")
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                samples[key] = sample.value
                if monotonic and "pid" not in sample.labels and key in self.last:
                    assert sample.value >= self.last[key], f"{key} went backwards"
        self.last = samples
        self.scrapes += 1
        return samples

    def value(self, name: str, **labels: str) -> float:
        return self.last.get((name, tuple(sorted(labels.items()))), 0.0)

    async def settle(self, name: str, expected: float, within: float = 15) -> None:
        """Poll until ``name`` reads ``expected``, then require it over several more scrapes
        (each may be answered by another worker)."""
        try:
            async with asyncio.timeout(scaled(within)):
                await self.scrape()
                while self.value(name) != expected:
                    await asyncio.sleep(0.05)
                    await self.scrape()
        except TimeoutError:
            raise AssertionError(f"{name} = {self.value(name)}, never {expected}") from None
        for _ in range(4):
            await self.scrape()
            assert self.value(name) == expected


async def test_connections_equal_connected_clients_through_close_and_kill_9(redis_url: str) -> None:
    env = {"GATEWAY_RATE_LIMIT": "3/60", "GATEWAY_MAX_MESSAGE_BYTES": "40"}
    with fleet(redis_url, env) as server:
        scraper = Scraper(server)
        await scraper.settle("gateway_connections", 0)
        clients = {f"user-{n}": await Listener.connect(server, f"user-{n}") for n in range(CLIENTS)}
        await scraper.settle("gateway_connections", CLIENTS)

        closed = list(clients)[:CLOSED]
        for user in closed:
            await clients.pop(user).close()
        await scraper.settle("gateway_connections", CLIENTS - CLOSED)
        # Their leaves go out in presence windows: delivered before the throughput is counted.
        await asyncio.gather(*(saw_leave(client, closed) for client in clients.values()))

        pids = pid_of_users(server)
        assert clients.keys() <= pids.keys()
        await check_rejections_and_throughput(scraper, clients, pids)

        victim, victim_clients = Counter(pids[user] for user in clients).most_common(1)[0]
        assert victim in descendants(server.pid)
        os.kill(victim, signal.SIGKILL)
        lost = [client for user, client in clients.items() if pids[user] == victim]
        assert len(lost) == victim_clients
        await asyncio.gather(*(client.wait_dropped() for client in lost))
        await scraper.settle("gateway_connections", CLIENTS - CLOSED - len(lost))

        async with asyncio.timeout(scaled(15)):  # gunicorn boots a replacement worker
            while len(reported := process_pids(scraper.last)) < 3:
                await asyncio.sleep(0.05)
                await scraper.scrape()
        assert victim not in reported
        assert len(reported) == 3  # the master, the survivor and the replacement
        assert reported <= descendants(server.pid) | {server.pid}
        assert scraper.value("gateway_connections") == CLIENTS - CLOSED - len(lost)

        for client in clients.values():
            if client not in lost:
                await client.close()
        await scraper.settle("gateway_connections", 0)
    assert scraper.scrapes > 20


async def saw_leave(client: Listener, users: list[str]) -> None:
    def left(event: dict[str, Any]) -> set[str]:
        if event.get("type") != "presence":
            return set()
        if event.get("event") == "left":
            return {event["user"]}
        return set(event.get("left", ()))

    def all_left(_: dict[str, Any]) -> bool:
        return set(users) <= {user for seen in client.events for user in left(seen)}

    await client.wait_for(all_left)


def process_pids(samples: Samples) -> set[int]:
    return {int(dict(labels)["pid"]) for name, labels in samples if name == "process_open_fds"}


async def check_rejections_and_throughput(
    scraper: Scraper, clients: dict[str, Listener], pids: dict[str, int]
) -> None:
    """Rejections move by exactly their number; deliveries and latencies by the fan-out."""
    sender = next(iter(clients.values()))
    before = await scraper.scrape()
    for n in range(2):
        await sender.send({"type": "message", "text": "x" * 41})
        await sender.wait_for(of_type("error", code="too_large"), count=n + 1)
    await sender.send('{"type":"no-such-command"}')
    await sender.wait_for(of_type("error", code="invalid"))
    for n in range(5):
        await sender.send({"type": "message", "text": f"m{n}"})
        if n < 3:
            await sender.wait_for(of_type("message", text=f"m{n}"))
        else:
            await sender.wait_for(of_type("error", code="rate_limited"), count=n - 2)
    for client in clients.values():
        await client.wait_for(of_type("message", text="m2"))

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return scraper.last.get(key, 0.0) - before.get(key, 0.0)

    deliveries = 3 * len(clients) + 5  # three messages to every client, five errors to one
    async with asyncio.timeout(scaled(10)):
        await scraper.scrape()
        while moved("gateway_messages_delivered_total") < deliveries:
            await asyncio.sleep(0.05)
            await scraper.scrape()
    assert moved("gateway_messages_delivered_total") == deliveries
    rejected = {
        reason: moved("gateway_messages_rejected_total", reason=reason)
        for reason in ("too_large", "invalid", "rate_limited", "forbidden")
    }
    assert rejected == {"too_large": 2, "invalid": 1, "rate_limited": 2, "forbidden": 0}
    assert moved("gateway_messages_received_total") == 3
    workers_with_members = len({pids[user] for user in clients})
    assert moved("gateway_delivery_latency_seconds_count") == 3 * workers_with_members
    assert moved("gateway_broadcast_recipients_sum") == 3 * len(clients)


async def test_exposition_is_the_contract_once_per_host(redis_url: str) -> None:
    """Through plain gunicorn with the image's config file, not ``gateway serve``."""
    with plain_gunicorn(redis_url) as server:
        clients = [await Listener.connect(server, f"reader-{n}") for n in range(4)]
        scraper = Scraper(server)
        await scraper.settle("gateway_connections", 4)
        text = server.get("/metrics").text
        for client in clients:
            await client.close()

    assert contract_problems(text) == []
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert [sample.labels for sample in families["gateway_info"].samples] == [
        {"version": __version__}
    ]
    for name in PROCESS_METRICS:
        samples = families[name.removesuffix("_total")].samples
        pids = [sample.labels["pid"] for sample in samples]
        assert len(pids) == len(set(pids)) == 3, f"{name}: {pids}"  # two workers + the master
    (connections,) = families["gateway_connections"].samples
    assert connections.value == 4
    (broker_up,) = families["gateway_broker_up"].samples
    assert broker_up.value == 1
