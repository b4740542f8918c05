"""Smoke test of ``python -m loadtest.bench``: tiny numbers, real servers, behaviour only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.support.bench import run_bench
from tests.support.servers import start_gateway


def bench(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> dict[str, Any]:
    return run_bench(*args, timeout=timeout, env={**os.environ, **(env or {})})


def test_fanout_against_running_gateway(tmp_path: Path) -> None:
    with start_gateway(env={"GATEWAY_RATE_LIMIT": "0"}) as gw:
        data = bench(
            "--scenario", "fanout", "--attach", gw.base_url,
            "-N", "20", "-P", "2", "--rate", "50", "--duration", "2", "--warmup", "0.5",
            "--repeat", "1",
            "--json", str(tmp_path / "fanout.json"),
        )  # fmt: skip
    run = data["results"]["attached-fanout"]
    assert run["connections"] == 22
    assert run["recipients"] >= 20  # every subscriber (and maybe the sender) hears a message
    assert run["deliveries"] > 0
    assert run["delivered_ratio"] >= 0.99
    assert run["p99_ms"] is not None
    assert run["processes"] >= 1  # the gateway was found through its listening socket
    assert run["server_cpu_s"] > 0
    assert run["errors"] == 0


def test_seed_baseline_and_stalled_receiver(tmp_path: Path) -> None:
    data = bench(
        "--scenario", "stalled", "--target", "seed", "--no-pin",
        "-N", "10", "-P", "1", "--rate", "50", "--duration", "1", "--warmup", "0.2",
        "--repeat", "1",
        "--msg-bytes", "100", "--json", str(tmp_path / "stalled.json"),
    )  # fmt: skip
    control, stalled = data["results"]["seed-control"], data["results"]["seed-stalled"]
    assert control["connections"] == stalled["connections"] == 11
    assert control["delivered_ratio"] >= 0.99
    assert stalled["deliveries"] > 0


def test_a_one_worker_run_ignores_an_exported_worker_count(tmp_path: Path) -> None:
    """`gateway serve` reads GATEWAY_WORKERS; the bench's own --workers choice must win."""
    data = bench(
        "--scenario", "fanout", "--target", "gateway", "--no-pin",
        "-N", "5", "-P", "1", "--rate", "20", "--duration", "0.5", "--warmup", "0.2",
        "--repeat", "1", "--json", str(tmp_path / "one.json"),
        env={"GATEWAY_WORKERS": "2"},
    )  # fmt: skip
    assert data["results"]["gateway-fanout"]["processes"] == 1
