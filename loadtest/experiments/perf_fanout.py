"""Experiment: ``perf record`` of one server during the fan-out's measured window.

Starts one server (Bun's pub/sub, the gateway, or the gateway as ``python -m MODULE``), runs the
benchmark's chat load against it (N=1000, P=10 by default, ``--rate 40``: 40k deliveries/s) and
records the server's processes with ``perf record -e cpu-clock -g`` for ``--seconds`` from the
start of the measured window. Then prints the run's line (perf's sampling inflates its CPU a
little) and ``perf report``'s split by shared object and its heaviest symbols, kernel ones
included, so the kernel's share of a ``send()`` can be told from uvloop's and Python's.

cpu-clock (a timer, not a hardware counter) because this host's VM has no PMU; perf must be
installed and ``kernel.perf_event_paranoid`` allow it (root here).

    python -m loadtest.experiments.perf_fanout --target gateway --rate 40 --out /tmp/gw.data
    python -m loadtest.experiments.perf_fanout --target bun --rate 40 --out /tmp/bun.data
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from loadtest import procstat
from loadtest.bench import chat
from loadtest.bench.model import Load
from loadtest.servers import Server, start_bun, start_gateway

REPORTS = (
    ["--no-children", "--sort", "dso"],
    ["--no-children", "--sort", "dso,sym"],
    ["--children", "--sort", "sym"],
)
"""By shared object; the heaviest symbols by self time; and by time under each symbol (callers
included: ``tcp_sendmsg`` with what it calls)."""


def recording(out: Path, seconds: float) -> Callable[..., Awaitable[chat.Window]]:
    """``chat.measure`` with ``perf record`` of the server running from the window's start."""
    shipped = chat.measure

    async def measure(server: Server, broker: Server | None, *args: Any) -> chat.Window:
        load: Load = args[-1]

        async def record() -> None:
            await asyncio.sleep(load.warmup)
            pids = ",".join(str(p) for p in server.pids())
            cmd = ["perf", "record", "-e", "cpu-clock", "-g", "-o", str(out), "-p", pids]
            proc = await asyncio.create_subprocess_exec(
                *cmd, "--", "sleep", str(seconds), stdout=subprocess.DEVNULL
            )
            await proc.wait()

        task = asyncio.create_task(record())
        window = await shipped(server, broker, *args)
        await task
        return window

    return measure


def start(target: str, core: str) -> Server:
    if target == "bun":
        return start_bun(core, label="bun-perf")
    command = None if target == "gateway" else [sys.executable, "-m", target]
    return start_gateway(core, 1, {}, label=f"{target.rsplit('.', 1)[-1]}-perf", command=command)


async def run(args: argparse.Namespace) -> None:
    seconds = args.seconds
    load = Load(
        subscribers=args.subscribers,
        publishers=10,
        rate=None if args.rate == "max" else float(args.rate),
        duration=seconds + 2.0,  # the recording ends inside the window
        warmup=2.0,
    )
    chat.measure = recording(args.out, seconds)  # type: ignore[assignment]
    server = start(args.target, args.server_core)
    result = await chat.run_chat(server, load, server.label)
    print(result.line())


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument(
        "--target", default="gateway", help="bun, gateway, or an experiment's module to run"
    )
    ap.add_argument("--rate", default="40", help="messages/s, or max")
    ap.add_argument("--subscribers", "-N", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--server-core", default="0")
    ap.add_argument("--gen-core", type=int, default=1)
    ap.add_argument("--top", type=int, default=40, help="lines of each report")
    args = ap.parse_args()
    if shutil.which("perf") is None:
        raise SystemExit("perf is not installed")
    os.sched_setaffinity(0, {args.gen_core})
    procstat.raise_nofile(200_000)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(run(args))
    for sort in REPORTS:
        cmd = ["perf", "report", "-i", str(args.out), "--stdio", "-g", "none", *sort]
        report = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        lines = [line for line in report.splitlines() if line.strip() and line[0] != "#"]
        print(f"\n$ {' '.join(cmd)}")
        print("\n".join(lines[: args.top]))


if __name__ == "__main__":
    main()
