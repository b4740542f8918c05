"""One gunicorn worker drains while the rest of the fleet keeps serving.

SIGTERM to a single worker (what the master sends on scale-down, or an operator), and worker
recycling by ``max_requests``: the worker sends its own clients away, the other worker's
clients see them leave, the master replaces it. gunicorn's liveness ``timeout`` is set below
the drain's length here, so a drain that stopped the worker's heartbeat would be killed by the
master (WORKER TIMEOUT, SIGABRT) before its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from tests.drain.support import (
    BULK,
    BULK_TEXT,
    ExitWatch,
    assert_sent_away,
    drain_env,
    drain_lines,
    publish,
    record,
)
from tests.support.clients import LobbyView, of_type, open_ws, recv_until
from tests.support.fleet import fleet_env as base_fleet_env
from tests.support.fleet import launch_fleet, serving_process, wait_for_workers
from tests.support.metrics import metric
from tests.support.rawws import StalledClient
from tests.support.servers import scaled, wait_until
from tests.support.topology import ClusterTopology, SentinelTopology

pytestmark = pytest.mark.redis

DRAIN_TIMEOUT = 4.0
HEARTBEAT_TIMEOUT = 2  # gunicorn's --timeout (uvicorn beats about once a second): under the drain


def fleet_env(redis_url: str, **extra: str) -> dict[str, str]:
    return base_fleet_env(
        redis_url,
        drain_env(DRAIN_TIMEOUT),
        {"GUNICORN_CMD_ARGS": f"--timeout {HEARTBEAT_TIMEOUT}"},
        extra,
    )


@pytest.fixture(params=["redis", "sentinel", "cluster"])
def broker_url(request: pytest.FixtureRequest, redis_url: str) -> str:
    """One Redis, Sentinel (1 primary, 2 replicas, 3 sentinels) and a 3-master Cluster: a
    worker's drain is the same on every topology (the topologies are the module's own)."""
    if request.param == "redis":
        return redis_url
    topology: SentinelTopology | ClusterTopology = request.getfixturevalue(request.param)
    return topology.url(f"drain-{uuid.uuid4().hex[:12]}")


async def test_sigterm_to_one_worker_drains_it_alone_within_its_deadline(broker_url: str) -> None:
    server = launch_fleet(fleet_env(broker_url), workers=2)
    try:
        workers = wait_for_workers(server, 2)
        stalled = StalledClient(server.port, "/ws/stalled")
        stalled.send_json({"type": "join", "room": "bulk"})
        stalled.read_until(b'"type":"joined","room":"bulk"')
        client_port = stalled.sock.getsockname()[1]
        target = serving_process(server.port, client_port, workers)

        # The kernel picks the worker of each connection: connect until both have a few.
        clients: list[Any] = []
        where: dict[str, int] = {}
        for n in range(200):
            if min(list(where.values()).count(pid) for pid in workers) >= 5:
                break
            clients.append(await open_ws(server.ws_url(f"/ws/c{n}")))
            where[f"c{n}"] = serving_process(server.port, clients[-1].local_address[1], workers)
        leaving = {user for user, pid in where.items() if pid == target} | {"stalled"}
        staying = [ws for n, ws in enumerate(clients) if where[f"c{n}"] != target]
        assert len(staying) >= 5, "the other worker never got a connection"
        publisher = await open_ws(server.ws_url("/ws/publisher"))
        await publisher.send(json.dumps({"type": "join", "room": "bulk"}))
        await recv_until(publisher, of_type("joined", room="bulk"))
        await publish(publisher, "bulk", [f"{n}:{BULK_TEXT}" for n in range(BULK)])
        publisher_on = serving_process(server.port, publisher.local_address[1], workers)
        if publisher_on == target:
            leaving.add("publisher")

        drained_tasks = {
            f"c{n}": asyncio.create_task(record(ws, within=DRAIN_TIMEOUT + 10))
            for n, ws in enumerate(clients)
            if where[f"c{n}"] == target
        }

        async def sees_them_leave(ws: ClientConnection) -> set[str]:
            """Who the client sees in the lobby once every drained user is gone from its view.

            Its view is its joined ack plus the presence it hears. A user who joined and left
            within one presence window is never in it (the two cancel out): the client never
            saw them arrive, so it needs no departure either."""
            view = LobbyView()
            await recv_until(ws, lambda e: view.apply(e) and not view.users & leaving, timeout=10)
            return view.users

        watchers = [asyncio.create_task(sees_them_leave(ws)) for ws in staying]
        os.kill(target, signal.SIGTERM)
        exit_watch = ExitWatch.of_pid(target)

        for user, task in drained_tasks.items():
            assert_sent_away(await task, user)
        for seen in await asyncio.gather(*watchers):
            assert not seen & leaving, seen
        seconds = await asyncio.to_thread(exit_watch.seconds, DRAIN_TIMEOUT + 5)
        got, _ = await asyncio.to_thread(stalled.read_to_end)
        stalled.close()
        replacement = wait_for_workers(server, 2, exclude=(target,))
        assert target not in replacement
        log = server.log()
        assert seconds < DRAIN_TIMEOUT, f"the worker took {seconds:.2f} s"
        assert "WORKER TIMEOUT" not in log, "gunicorn killed the draining worker"
        assert f"Worker (pid:{target}) was sent SIGTERM" in log
        (line,) = [line for line in drain_lines(server) if line["pid"] == target]
        assert (line["drained"], line["cut"]) == (len(leaving), 1), line
        closed = metric(server.base_url, "gateway_connections_closed_total", reason="drain")
        assert closed == len(leaving), "the fleet's drain counter (dead workers included)"
        for ws in staying:  # the other worker's clients were never touched
            await ws.send(json.dumps({"type": "ping"}))
            await recv_until(ws, of_type("pong"))
        print(
            f"\none worker of two drained {line['drained']} connections in "
            f"{line['duration_seconds']} s and exited after {seconds:.2f} s; the stalled client "
            f"got {len(got.messages('bulk'))} of {BULK} bulk messages before the cut"
        )
    finally:
        server.stop()


async def test_max_requests_recycling_drains_the_worker(redis_url: str) -> None:
    env = fleet_env(redis_url, GUNICORN_CMD_ARGS=f"--timeout 30 --max-requests {20}")
    server = launch_fleet(env, workers=2)
    try:
        clients = [await open_ws(server.ws_url(f"/ws/c{n}")) for n in range(10)]
        recordings = [asyncio.create_task(record(ws, within=60)) for ws in clients]
        async with httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0)) as http:
            for _ in range(400):  # a new connection each, so both workers count requests
                if all(task.done() for task in recordings):
                    break
                # A request accepted just as its worker stops may go unanswered (uvicorn's
                # shutdown closes idle connections): that is not what this test is about.
                with contextlib.suppress(httpx.HTTPError):
                    await http.get(server.base_url + "/healthz", timeout=scaled(5))
        for n, received in enumerate(await asyncio.gather(*recordings)):
            assert_sent_away(received, f"c{n}")
        assert "Maximum request limit of 20 exceeded" in server.log()
        wait_until(  # a worker logs its drain once the last connection's cleanup is done
            lambda: sum(line["drained"] for line in drain_lines(server)) >= len(clients),
            10,
            "the recycled workers never logged their drains",
        )
        assert server.alive()
    finally:
        server.stop()


def graceful_timeout(env: dict[str, str]) -> float:
    """gunicorn's graceful_timeout as the project's config computes it under ``env``."""
    code = "import gateway.server.gunicorn_conf as c; print(c.graceful_timeout)"
    output = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=scaled(30),
    )
    return float(output.stdout.strip())


async def test_sigterm_to_the_master_with_a_stuck_client_ends_before_gunicorn_would_kill(
    redis_url: str,
) -> None:
    """The runtime half of the timing chain: every worker is gone by the drain deadline, well
    inside gunicorn's graceful_timeout, so the master never has to SIGKILL one."""
    env = fleet_env(redis_url)
    server = launch_fleet(env, workers=2)
    try:
        workers = wait_for_workers(server, 2)
        stalled = StalledClient(server.port, "/ws/stalled")
        stalled.send_json({"type": "join", "room": "bulk"})
        stalled.read_until(b'"type":"joined","room":"bulk"')
        publisher = await open_ws(server.ws_url("/ws/publisher"))
        await publisher.send(json.dumps({"type": "join", "room": "bulk"}))
        await recv_until(publisher, of_type("joined", room="bulk"))
        await publish(publisher, "bulk", [f"{n}:{BULK_TEXT}" for n in range(BULK)])

        server.signal(signal.SIGTERM)
        master = ExitWatch.of(server.process)
        watches = [ExitWatch.of_pid(pid) for pid in workers]
        worker_seconds = [await asyncio.to_thread(w.seconds, DRAIN_TIMEOUT + 10) for w in watches]
        master_seconds = await asyncio.to_thread(master.seconds, DRAIN_TIMEOUT + 10)
        stalled.close()
    finally:
        server.stop()
    log = server.log()
    limit = graceful_timeout(env)
    assert max(worker_seconds) < DRAIN_TIMEOUT < limit, (worker_seconds, limit)
    assert master_seconds < limit
    assert "SIGKILL" not in log, "gunicorn had to kill a worker"
    assert sorted(line["cut"] for line in drain_lines(server)) == [0, 1]
    print(
        f"\nmaster SIGTERM with a stuck client: workers gone after "
        f"{', '.join(f'{s:.2f}' for s in worker_seconds)} s (drain timeout {DRAIN_TIMEOUT} s, "
        f"graceful_timeout {limit} s), master after {master_seconds:.2f} s"
    )
