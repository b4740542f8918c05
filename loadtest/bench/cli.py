"""The command line: ``python -m loadtest.bench`` parses into Options, runs the scenario,
writes the raw JSON (and with ``--scenario all`` RESULTS.md and its plots); ``--render-from``
re-renders both, ``--plots-from-md`` redraws the plots from RESULTS.md's generated block.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import loadtest.bench
from loadtest import procstat
from loadtest.bench.closeness import closeness_table, run_closeness
from loadtest.bench.closeness_report import (
    CLOSENESS_BEGIN,
    CLOSENESS_END,
    render_closeness,
    split_table,
    variant_table,
)
from loadtest.bench.model import (
    CLOSENESS_GROUPS,
    PRESETS,
    SCENARIOS,
    SERVER_KINDS,
    SHARED_REDIS_URL,
    STORM_RUNS,
    Load,
    Options,
    Result,
    default_idle_connections,
)
from loadtest.bench.readback import read_block
from loadtest.bench.report import RESULTS_MD, git_describe, render, versions, write_results_md
from loadtest.bench.scenarios import Bench
from loadtest.bench.storm import StormResult, as_raw
from loadtest.bench.storm_report import STORM_BEGIN, STORM_END, render_storm
from loadtest.bench.targets import targets_table
from loadtest.servers import RESULTS_DIR


def parse_args(argv: list[str] | None = None) -> Options:
    ap = argparse.ArgumentParser(
        prog="python -m loadtest.bench",
        description=(loadtest.bench.__doc__ or "").split("\n")[0],
    )
    for add in (what_args, load_args, idle_args, storm_args, server_args, output_args):
        add(ap)
    return options(ap.parse_args(argv), argv)


def options(a: argparse.Namespace, argv: list[str] | None) -> Options:
    """Options from parsed arguments: the scenario's preset fills what was not given."""
    scenario: str = a.scenario
    preset = dict(PRESETS.get(scenario, PRESETS["fanout"]))
    rate_arg = a.rate if a.rate is not None else preset["rate"]
    rate = None if str(rate_arg).lower() == "max" else float(rate_arg)
    load = Load(
        subscribers=a.subscribers if a.subscribers is not None else int(preset["subscribers"]),
        publishers=a.publishers if a.publishers is not None else int(preset["publishers"]),
        rate=rate,
        duration=a.duration if a.duration is not None else float(preset["duration"]),
        warmup=a.warmup if a.warmup is not None else float(preset["warmup"]),
        window=a.window,
        msg_bytes=a.msg_bytes if a.msg_bytes is not None else int(preset["msg_bytes"]),
        stalled=a.stalled if scenario == "stalled" else 0,
        room=a.room,
        connect_concurrency=a.connect_concurrency,
    )
    default_targets = ["seed", "bun", "gateway"] if scenario == "closeness" else ["seed", "gateway"]
    targets: list[str] = a.target or default_targets
    if scenario == "workers":
        targets = ["gateway"]
    env: dict[str, str] = {}
    for item in a.gateway_env:
        key, _, value = item.partition("=")
        env[key] = value
    pin = not a.no_pin and (os.cpu_count() or 1) >= 2
    return Options(
        scenario=scenario,
        targets=targets,
        load=load,
        attach_url=a.attach,
        wire=a.wire,
        server_core=a.server_core if pin else None,
        gen_core=a.gen_core if pin else None,
        idle_connections=a.idle_connections or default_idle_connections(),
        idle_seconds=a.idle_seconds
        if a.idle_seconds is not None
        else (3.0 if scenario == "closeness" else 10.0),
        idle_room_each=not a.idle_in_lobby,
        repeat=a.repeat,
        experiments=a.experiments,
        gateway_command=shlex.split(a.gateway_command) if a.gateway_command else None,
        workers=a.workers,
        redis_url=a.redis_url or SHARED_REDIS_URL,
        private_redis=a.redis_url is None,
        send_queue=a.send_queue,
        gateway_env=env,
        json_out=a.json,
        results_md=a.results_md,
        render_from=a.render_from,
        plots_from_md=a.plots_from_md,
        storm_sizes=[int(x) for x in a.storm_sizes.split(",") if x.strip()],
        storm_generators=a.storm_generators,
        storm_runs=storm_runs(a.storm_runs),
        storm_deadline=a.storm_deadline,
        handshake_timeout=a.handshake_timeout,
        groups=closeness_groups(a.groups),
        variants=variants(a.variant),
        command="python -m loadtest.bench " + " ".join(argv if argv is not None else sys.argv[1:]),
    )


def what_args(ap: argparse.ArgumentParser) -> None:
    """Which scenario, against which servers, in which wire format."""
    ap.add_argument("--scenario", choices=SCENARIOS, default="fanout")
    ap.add_argument(
        "--target",
        type=target_list,
        default=None,
        metavar="SERVERS",
        help="which servers to start, comma-separated from seed, bun (Bun's pub/sub, the "
        "reference) and gateway, interleaved in that order; 'both' = seed,gateway (the default), "
        "'all' = seed,bun,gateway (the default of --scenario closeness)",
    )
    ap.add_argument("--attach", metavar="URL", help="measure an already running server instead")
    ap.add_argument("--wire", choices=("json", "text"), default="json")


def target_list(text: str) -> list[str]:
    """``--target``: 'both', 'all', or servers by name ('bun,gateway'), each once."""
    if text == "both":
        return ["seed", "gateway"]
    if text == "all":
        return list(SERVER_KINDS)
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = sorted(set(names) - set(SERVER_KINDS))
    if unknown or not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"{text!r}: name each of {', '.join(SERVER_KINDS)} at most once (or 'both', 'all')"
        )
    return names


def load_args(ap: argparse.ArgumentParser) -> None:
    """The chat load: how many, how fast, how long, how big."""
    ap.add_argument("--subscribers", "-N", type=int, default=None)
    ap.add_argument("--publishers", "-P", type=int, default=None)
    ap.add_argument("--rate", default=None, help="total messages/s, or 'max' (closed loop)")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds")
    ap.add_argument("--warmup", type=float, default=None, help="seconds before measuring")
    ap.add_argument("--window", type=int, default=20, help="messages in flight at rate max")
    ap.add_argument("--msg-bytes", type=int, default=None, help="text size of a message")
    ap.add_argument("--room", default="lobby")
    ap.add_argument(
        "--connect-concurrency", type=int, default=200, help="handshakes in flight when connecting"
    )
    ap.add_argument("--stalled", type=int, default=1, help="stalled receivers (scenario stalled)")


def idle_args(ap: argparse.ArgumentParser) -> None:
    """The idle run, and how many interleaved rounds a comparison gets."""
    ap.add_argument(
        "--idle-connections",
        type=int,
        default=None,
        help="idle run size (default 20000, or what the open-file hard limit allows)",
    )
    ap.add_argument(
        "--idle-seconds",
        type=float,
        default=None,
        help="seconds the idle connections stay quiet (default 10; 3 in closeness)",
    )
    ap.add_argument(
        "--idle-in-lobby",
        action="store_true",
        help="leave idle gateway connections in the lobby (presence makes connecting O(N²))",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="interleaved rounds per comparison; the median run is reported (1 = single run)",
    )


def storm_args(ap: argparse.ArgumentParser) -> None:
    """The storm: how many clients join the lobby at once, from how many processes, where."""
    ap.add_argument(
        "--storm-sizes",
        default="3000,10000",
        metavar="N,N",
        help="clients per storm, one storm each (default 3000,10000)",
    )
    ap.add_argument(
        "--storm-generators",
        type=int,
        default=4,
        help="generator processes sharing a storm's clients (fds: ≤ ~19,900 each here)",
    )
    ap.add_argument(
        "--storm-runs",
        default=",".join(STORM_RUNS),
        help="single (one process), fleet (--workers N + Redis, then drain one worker), "
        "baseline (one process, GATEWAY_PRESENCE_BATCH_MS=0, at the smallest size)",
    )
    ap.add_argument(
        "--storm-deadline",
        type=float,
        default=120.0,
        help="seconds a storm (and a rejoin) may take before it is reported as incomplete",
    )
    ap.add_argument(
        "--handshake-timeout",
        type=float,
        default=10.0,
        help="storm: seconds for a TCP connect + 101, and again for the joined ack",
    )


def storm_runs(text: str) -> list[str]:
    runs = [x.strip() for x in text.split(",") if x.strip()]
    unknown = sorted(set(runs) - set(STORM_RUNS))
    if unknown:
        raise SystemExit(f"--storm-runs: unknown {', '.join(unknown)} (known: {STORM_RUNS})")
    return runs


def closeness_groups(text: str) -> list[str]:
    groups = [x.strip() for x in text.split(",") if x.strip()]
    unknown = sorted(set(groups) - set(CLOSENESS_GROUPS))
    if unknown or not groups:
        raise SystemExit(f"--groups: unknown {', '.join(unknown)} (known: {CLOSENESS_GROUPS})")
    return groups


def variants(items: list[str]) -> dict[str, list[str]]:
    """``--variant NAME=MODULE``: the gateway as ``python -m MODULE`` (which takes ``serve``)."""
    out: dict[str, list[str]] = {}
    for item in items:
        name, _, module = item.partition("=")
        if not name.isidentifier() or not module or name in SERVER_KINDS or name in out:
            raise SystemExit(f"--variant {item!r}: NAME=MODULE, NAME a new identifier")
        out[name] = [sys.executable, "-m", module]
    return out


def server_args(ap: argparse.ArgumentParser) -> None:
    """How the gateway under test is started and pinned."""
    ap.add_argument(
        "--gateway-command",
        default=None,
        help="command instead of `gateway` (e.g. an experiment), followed by `serve …`",
    )
    ap.add_argument(
        "--experiments",
        action="store_true",
        help="with --scenario all: also run loadtest/experiments (gateway variants)",
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=MODULE",
        help="closeness: also run the gateway as `python -m MODULE serve …` (an experiment in "
        "loadtest/experiments) as target NAME, after the gateway in every round",
    )
    ap.add_argument(
        "--groups",
        default=",".join(CLOSENESS_GROUPS),
        help="closeness: which run groups, from fanout (full rate), workers (--workers N + "
        "Redis, full rate), latency (40k deliveries/s) and idle (default: all)",
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--redis-url",
        default=None,
        help="a Redis to share (workers, storm); without it workers and closeness start a "
        f"private redis-server per run pinned with the workers (storm: {SHARED_REDIS_URL})",
    )
    ap.add_argument("--send-queue", type=int, default=None, help="GATEWAY_SEND_QUEUE")
    ap.add_argument(
        "--gateway-env", action="append", default=[], metavar="K=V", help="extra env var"
    )
    ap.add_argument("--server-core", default="0", help="taskset core(s) for servers")
    ap.add_argument("--gen-core", type=int, default=1, help="core for this generator")
    ap.add_argument("--no-pin", action="store_true", help="pin nothing")


def output_args(ap: argparse.ArgumentParser) -> None:
    """Where results go, or which earlier run to re-render."""
    ap.add_argument("--json", type=Path, default=None, help="write results as JSON here")
    ap.add_argument("--results-md", type=Path, default=RESULTS_MD)
    ap.add_argument(
        "--render-from",
        type=Path,
        default=None,
        metavar="JSON",
        help="rewrite RESULTS.md and its plots from a raw results file of an earlier `all` run; "
        "runs nothing",
    )
    ap.add_argument(
        "--plots-from-md",
        action="store_true",
        help="redraw the plots next to --results-md from the figures its generated block "
        "prints (when the run's raw JSON is gone); runs nothing",
    )


def rerender(opts: Options) -> int:
    """RESULTS.md from a saved raw results file (same figures, current report layout)."""
    assert opts.render_from is not None
    data = json.loads(opts.render_from.read_text())
    saved = parse_args(shlex.split(data["command"])[3:])  # after "python -m loadtest.bench"
    bench = Bench(saved)
    bench.meta = data.get("meta", {})
    bench.meta.setdefault("gateway_source", data.get("gateway_source", "not recorded"))
    bench.failures = data.get("failures", {})
    for key, raw in data["results"].items():
        bench.results[key] = Result(**raw)
    for key, raws in data.get("rounds", {}).items():
        bench.rounds[key] = [Result(**raw) for raw in raws]
    if saved.scenario == "closeness":
        block = render_closeness(data, bench.results, bench.rounds)
        write_results_md(opts.results_md, block, CLOSENESS_BEGIN, CLOSENESS_END)
        print(f"wrote {opts.results_md} (closeness block) from {opts.render_from}")
        return 0
    if saved.scenario == "storm":
        for key, raw in data.get("storms", {}).items():
            bench.storms[key] = StormResult.from_dict(raw)
        write_storm_block(bench, data, opts.results_md)
        print(f"wrote {opts.results_md} (storm block) from {opts.render_from}")
        return 0
    block = render(bench, data["started_utc"], data.get("elapsed_s", 0.0), data.get("busy", []))
    write_results_md(opts.results_md, block)
    print(f"wrote {opts.results_md} from {opts.render_from}")
    recorded = procstat.Machine(**data["machine"]) if "machine" in data else None
    draw_plots(opts.results_md, bench, caption(data["started_utc"], recorded))
    return 0


def replot(opts: Options) -> int:
    """The plots from the figures RESULTS.md's generated block prints (rounded as printed)."""
    try:
        block = read_block(opts.results_md.read_text())
    except (OSError, ValueError) as exc:
        print(f"no plots drawn from {opts.results_md}: {exc}", file=sys.stderr)
        return 1
    bench = Bench(opts)
    bench.results, bench.rounds = block.results, block.rounds
    return 0 if draw_plots(opts.results_md, bench, block.caption) else 1


def caption(started: str, machine: procstat.Machine | None) -> str:
    where = f" on {machine.cores} cores ({machine.cpu_model})" if machine else ""
    return f"Run {started} UTC{where}"


def draw_plots(results_md: Path, bench: Bench, caption: str) -> bool:
    """The PNGs next to RESULTS.md, from the figures its block was rendered from. Without
    matplotlib (not installed with the `load` extra) say so: the run's results are kept."""
    try:
        from loadtest.bench.plots import plots_dir, write_plots
    except ImportError as exc:
        print(f"plots not drawn: {exc} (pip install -e '.[load]')")
        return False
    for path in write_plots(plots_dir(results_md), bench.results, bench.rounds, caption):
        print(f"wrote {path}")
    return True


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.render_from is not None:
        return rerender(opts)
    if opts.plots_from_md:
        return replot(opts)
    if opts.gen_core is not None:
        os.sched_setaffinity(0, {opts.gen_core})
    procstat.raise_nofile(200_000)
    busy = procstat.machine_busy_fraction(1.0) if opts.scenario in ("all", "storm") else []
    loadavg = Path("/proc/loadavg").read_text().strip()
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    t0 = time.monotonic()
    bench = Bench(opts)
    bench.meta["gateway_source"] = git_describe()
    with event_loop_runner() as runner:
        runner.run(run_closeness(bench) if opts.scenario == "closeness" else bench.run())
    elapsed = time.monotonic() - t0
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = opts.json_out or RESULTS_DIR / f"{started.replace(' ', 'T')}-{opts.scenario}.json"
    raw = raw_results(bench, started, elapsed, busy)
    raw["loadavg"] = loadavg
    out.write_text(json.dumps(raw, indent=2))
    print(f"raw results: {out}")
    if opts.scenario == "storm":
        write_storm_block(bench, raw, opts.results_md)
        print(f"wrote {opts.results_md} (storm block)")
    if opts.scenario == "closeness":
        block = render_closeness(raw, bench.results, bench.rounds)
        write_results_md(opts.results_md, block, CLOSENESS_BEGIN, CLOSENESS_END)
        print(f"wrote {opts.results_md} (closeness block)")
    if opts.scenario == "all":
        write_results_md(opts.results_md, render(bench, started, elapsed, busy))
        print(f"wrote {opts.results_md}")
        draw_plots(opts.results_md, bench, caption(started, procstat.machine()))
    if opts.scenario != "closeness":  # its own table below says the same against Bun
        for row in targets_table(bench.results, bench.rounds):
            print(row)
    for line in closeness_table(bench.results, bench.rounds):
        print(line)
    if opts.scenario == "closeness":
        for line in split_table(bench.results, bench.rounds):
            print(line)
        for line in variant_table(bench.results, bench.rounds, list(opts.variants)):
            print(line)
    return 0


def event_loop_runner() -> asyncio.Runner:
    """On uvloop when it is installed: the generator must not be the run's bottleneck."""
    try:
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        return asyncio.Runner()


def raw_results(bench: Bench, started: str, elapsed: float, busy: list[float]) -> dict[str, Any]:
    """The raw JSON: everything ``--render-from`` needs to write the same block again."""
    return {
        "command": bench.opts.command,
        "started_utc": started,
        "machine": asdict(procstat.machine()),
        "versions": versions(),
        "meta": bench.meta,
        "results": {k: asdict(v) for k, v in bench.results.items()},
        "failures": bench.failures,
        "rounds": {k: [asdict(x) for x in v] for k, v in bench.rounds.items()},
        "elapsed_s": elapsed,
        "busy": busy,
        "storms": as_raw(bench.storms),
    }


def write_storm_block(bench: Bench, raw: dict[str, Any], results_md: Path) -> None:
    """RESULTS.md's storm block from a run (or its raw JSON): the same figures, same text."""
    block = render_storm(
        command=raw["command"],
        started=raw["started_utc"],
        elapsed=raw.get("elapsed_s", 0.0),
        loadavg=raw.get("loadavg", ""),
        meta=raw.get("meta", {}),
        storms=bench.storms,
        failed=raw.get("failures", {}),
        versions=raw.get("versions", {}),
    )
    write_results_md(results_md, block, STORM_BEGIN, STORM_END)
