"""Smoke test of ``python -m loadtest.bench --scenario storm``: a tiny storm (60 clients from 2
generator processes) against real servers. Behaviour only, never speed: everyone admitted, no
handshake refused or timed out, presence bounded by the windows, the drain honoured."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from loadtest.bench.storm_report import STORM_BEGIN, STORM_END
from tests.support.redis import redis_base_url

__all__ = ["redis_base_url"]

REPO = Path(__file__).resolve().parents[2]
N = 60
WINDOW_S = 0.25  # GATEWAY_PRESENCE_BATCH_MS's default


def storm(tmp_path: Path, *extra: str) -> tuple[dict[str, Any], str]:
    out, md = tmp_path / "storm.json", tmp_path / "RESULTS.md"
    md.write_text("# Results\n\nkept\n")
    done = subprocess.run(
        [
            sys.executable, "-m", "loadtest.bench", "--scenario", "storm", "--no-pin",
            "--storm-sizes", str(N), "--storm-generators", "2", "--storm-deadline", "60",
            "--json", str(out), "--results-md", str(md), *extra,
        ],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
        capture_output=True,
        text=True,
        timeout=100,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    data: dict[str, Any] = json.loads(out.read_text())
    assert not data["failures"], data["failures"]
    return data, md.read_text()


def admitted_cleanly(phase: dict[str, Any]) -> None:
    assert phase["clients"] == N
    assert phase["admitted"] == N
    assert phase["seconds"] is not None
    assert phase["refused"] == phase["timed_out"] == phase["ack_timeouts"] == 0, phase
    assert phase["closed_before_ack"] == {}, phase
    assert phase["gave_up"] == 0


def windows_bound(seconds: float) -> int:
    """At most one presence event per window, plus the first change's (sent at once) and the
    last window's: a batched storm's ceiling per client, however fast or slow the machine."""
    return math.ceil(seconds / WINDOW_S) + 2


def test_one_process_storm_is_batched_and_the_baseline_is_not(tmp_path: Path) -> None:
    data, md = storm(tmp_path, "--storm-runs", "single,baseline")
    batched = data["storms"][f"gateway-storm-{N}"]
    admitted_cleanly(batched["storm"])
    s = batched["storm"]
    assert 1 <= s["events_max"] <= windows_bound(s["last_s"]), s
    assert s["acks"] == N
    assert batched["processes"] == 1

    base = data["storms"][f"gateway-storm-{N}-batch0"]
    admitted_cleanly(base["storm"])
    # One event per join, to everyone already there (and the joiner): N(N+1)/2 in all.
    assert base["storm"]["events_mean"] * N == N * (N + 1) / 2
    assert base["storm"]["kinds"] == {"joined": N * (N + 1) // 2}
    assert base["env"] == {"GATEWAY_PRESENCE_BATCH_MS": "0"}

    # The storm's own block, between its markers, with the command; the rest kept.
    assert md.startswith("# Results\n\nkept\n")
    block = md[md.index(STORM_BEGIN) : md.index(STORM_END)]
    assert "--scenario storm --no-pin" in block
    assert f"| gateway-storm-{N} | defaults | {N} | 1 |" in block
    assert "Load average before the run" in block


def test_fleet_storm_then_drain_of_one_worker(tmp_path: Path, redis_base_url: str) -> None:
    data, md = storm(tmp_path, "--storm-runs", "fleet", "--redis-url", redis_base_url)
    fleet = data["storms"][f"fleet2-storm-{N}"]
    admitted_cleanly(fleet["storm"])
    s = fleet["storm"]
    assert s["events_max"] <= windows_bound(s["last_s"]), s
    rejoin = fleet["rejoin"]
    # Every client of the drained worker got `reconnect` + 1012 and came back after after_ms.
    assert rejoin["drained"] >= 1
    assert set(rejoin["closes"]) == {"1012"}, rejoin["closes"]
    assert rejoin["after_ms_max"] <= 5000  # GATEWAY_DRAIN_JITTER's default window
    admitted_cleanly(rejoin)
    assert rejoin["unexpected_eof"] == 0
    assert f"drained {rejoin['drained']} connections" in fleet["drain_log"]
    # Two connections in turn (the drained one, then the new one): two windows more at most.
    assert rejoin["events_max"] <= windows_bound(rejoin["last_s"]) + 2, rejoin
    assert "### Drain of one worker, and the rejoin" in md
