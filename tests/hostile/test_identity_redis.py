"""One id, one connection across the workers of a fleet on Redis (SPEC "Hardening": "One id,
one connection (auth off), across workers"): simultaneous claims, immediate reconnects, and a
worker killed with its users' ids still claimed."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.hostile.identity import Outcome, connect_as, leave
from tests.support.fleet import fleet, fleet_env, serving_process, wait_for_workers
from tests.support.servers import GatewayProcess, scaled

pytestmark = pytest.mark.redis

HEARTBEAT_TIMEOUT = 3.0
PAIRS = 40
RECONNECTS = 50


@pytest.fixture
def two_workers(redis_url: str) -> Iterator[GatewayProcess]:
    settings = {
        "GATEWAY_RATE_LIMIT": "0",
        "GATEWAY_IDLE_TIMEOUT": "0",
        "GATEWAY_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
    }
    with fleet(fleet_env(redis_url, settings)) as server:
        yield server


async def test_simultaneous_connects_with_one_id_admit_exactly_one(
    two_workers: GatewayProcess,
) -> None:
    both, neither = [], []
    for pair in range(PAIRS):
        name = f"twin-{pair}"
        first, second = await asyncio.gather(
            connect_as(two_workers, name), connect_as(two_workers, name)
        )
        if first.admitted and second.admitted:
            both.append(name)
        elif not first.admitted and not second.admitted:
            neither.append((name, first.code, second.code))
        for outcome in (first, second):
            if not outcome.admitted:
                assert (outcome.code, outcome.reason) == (1008, "client id already connected")
        await asyncio.gather(leave(first), leave(second))
    assert both == [], f"{len(both)} of {PAIRS} pairs both admitted"
    assert neither == [], f"pairs where both were refused: {neither}"


async def test_a_clean_close_frees_the_id_at_once(two_workers: GatewayProcess) -> None:
    refused: list[Outcome] = []
    outcome = await connect_as(two_workers, "returner")
    assert outcome.admitted
    for _ in range(RECONNECTS):
        await leave(outcome)
        outcome = await connect_as(two_workers, "returner")
        if not outcome.admitted:
            refused.append(outcome)
            outcome = await _claim_within(two_workers, "returner", 20)
    await leave(outcome)
    assert refused == [], f"{len(refused)} of {RECONNECTS} reconnects refused"


async def test_a_killed_workers_ids_are_free_within_the_heartbeat_timeout(
    two_workers: GatewayProcess,
) -> None:
    victim = await connect_as(two_workers, "orphan")
    assert victim.admitted
    assert victim.ws is not None
    workers = wait_for_workers(two_workers)
    worker = serving_process(two_workers.port, int(victim.ws.local_address[1]), workers)
    os.kill(worker, signal.SIGKILL)
    killed = time.monotonic()
    outcome = await _claim_within(two_workers, "orphan", 40)
    locked_out = time.monotonic() - killed
    await leave(outcome)
    await leave(victim)
    assert locked_out <= HEARTBEAT_TIMEOUT + scaled(1.0), f"locked out {locked_out:.1f}s"


async def test_look_alikes_are_refused_on_every_worker(two_workers: GatewayProcess) -> None:
    alice = await connect_as(two_workers, "alice")
    assert alice.admitted
    outcomes = [await connect_as(two_workers, v) for v in ["Alice", "al\u0456ce", "ALICE "] * 4]
    assert [o.code for o in outcomes] == [1008] * len(outcomes)
    await leave(alice)
    again = await _claim_within(two_workers, "Al\u0456ce", 20)
    await leave(again)


async def _claim_within(server: GatewayProcess, user: str, seconds: float) -> Outcome:
    """Connect as ``user`` until admitted (bounded); each refusal is a fresh attempt."""
    deadline = time.monotonic() + scaled(seconds)
    for _ in range(int(scaled(seconds) / 0.05) + 1):
        outcome = await connect_as(server, user)
        if outcome.admitted:
            return outcome
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    raise AssertionError(f"{user!r} still refused after {seconds}s")
