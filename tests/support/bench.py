"""``python -m loadtest.bench`` run for real from a test (its exit code checked, its JSON read),
and made-up chat runs for the tests of its reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loadtest.bench.model import Result

REPO = Path(__file__).resolve().parents[2]


def run_bench(
    *args: str, timeout: float = 60, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The run's raw results (the file after ``--json``, which ``args`` must name); ``env``
    replaces the environment (default: this one)."""
    out = Path(args[args.index("--json") + 1])
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.bench", *args],
        cwd=REPO,
        env=dict(os.environ if env is None else env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def chat_result(
    label: str,
    cpu_us: float,
    *,
    user_us: float | None = None,
    sys_us: float | None = None,
    p99: float | None = None,
    broker_s: float | None = None,
) -> Result:
    """A chat run as the bench records it: a million deliveries at 40k/s, ``cpu_us`` each
    (``user_us`` + ``sys_us`` of it when given), the server named by the label's first word."""
    deliveries = 1_000_000
    return Result(
        label=label,
        server=label.split("-")[0],
        scenario="chat",
        load="N=1000, P=10",
        deliveries=deliveries,
        deliveries_per_s=40_000.0,
        server_cpu_s=cpu_us * deliveries / 1e6,
        server_user_s=None if user_us is None else user_us * deliveries / 1e6,
        server_sys_s=None if sys_us is None else sys_us * deliveries / 1e6,
        cpu_us_per_delivery=cpu_us,
        broker_cpu_s=broker_s,
        p99_ms=p99,
    )
