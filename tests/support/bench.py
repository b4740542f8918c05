"""``python -m loadtest.bench`` run for real from a test: its exit code checked, its JSON read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
