"""``--scenario workers`` brings its own redis-server (pinned with the workers, no persistence)
unless ``--redis-url`` names one, and counts that server's CPU beside the workers'."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.support.bench import run_bench
from tests.support.redis import server_binary


def test_the_workers_run_starts_a_private_redis_and_measures_it(tmp_path: Path) -> None:
    server_binary()  # skips (fails in CI) where there is no redis-server
    out = tmp_path / "workers.json"
    data = run_bench(
        "--scenario", "workers", "--workers", "2",
        "--no-pin", "-N", "10", "-P", "2", "--rate", "100", "--duration", "1",
        "--warmup", "0.3", "--repeat", "1", "--json", str(out),
        timeout=120,
    )  # fmt: skip
    fleet, single = data["results"]["gateway-workers2"], data["results"]["gateway-single"]
    assert fleet["processes"] == 3  # gunicorn's master and two workers
    assert fleet["delivered_ratio"] >= 0.99
    assert fleet["broker_cpu_s"] is not None  # measured: the run had a broker
    assert single["broker_cpu_s"] is None
    redis = data["meta"]["servers"]["redis"]
    assert "6379" not in redis
    assert redis[redis.index("--save") + 1] == ""
    env = data["meta"]["env"]["gateway-workers2"]["GATEWAY_BROKER_URL"]
    port = int(env.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as probe:  # stopped with its run
        assert probe.connect_ex(("127.0.0.1", port)) != 0
