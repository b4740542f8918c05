"""``gateway serve`` takes its worker count from ``GATEWAY_WORKERS`` when ``--workers`` is not
given (an explicit flag wins), and refuses several workers without a shared broker however the
count was asked for."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.fleet import fleet_env, wait_for_workers, worker_pids
from tests.support.servers import GATEWAY_BIN, free_port, launch_gateway, scaled


@pytest.mark.redis
def test_the_setting_starts_that_many_workers(redis_url: str) -> None:
    server = launch_gateway(fleet_env(redis_url, {"GATEWAY_WORKERS": "2"}))  # no --workers
    try:
        assert len(wait_for_workers(server, 2)) == 2
        assert len(worker_pids(server.pid)) == 2
    finally:
        server.stop()


@pytest.mark.redis
def test_an_explicit_flag_wins_over_the_setting(redis_url: str) -> None:
    env = fleet_env(redis_url, {"GATEWAY_WORKERS": "2"})
    server = launch_gateway(env, args=["--workers", "1"])
    try:
        assert worker_pids(server.pid) == set(), "one uvicorn process, no gunicorn workers"
    finally:
        server.stop()


def test_the_setting_without_a_broker_is_refused() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PROMETHEUS_"))}
    # A loopback port of its own: were the setting ignored, the gateway would serve there.
    env.update(GATEWAY_WORKERS="2", GATEWAY_HOST="127.0.0.1", GATEWAY_PORT=str(free_port()))
    result = subprocess.run(
        [str(GATEWAY_BIN), "serve"], env=env, capture_output=True, text=True, timeout=scaled(30)
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "GATEWAY_BROKER_URL" in lines[0]
