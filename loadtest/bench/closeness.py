"""Issue 19's targets in one invocation: the gateway against Bun's pub/sub (and the seed).

``--scenario closeness`` runs, each group ``--repeat`` rounds interleaved:

* full rate: seed, Bun, gateway, and ``gateway --workers 2`` through a private redis-server
  (pinned with the workers; its CPU counted in) — CPU per delivery;
* 40 msg/s to N=1000 (40k deliveries/s): seed, Bun, gateway — CPU per delivery and p99;
* idle: K quiet connections on each — KiB of server memory per connection.

``--groups`` runs only some of these groups; ``--variant NAME=MODULE`` adds a gateway variant
(an experiment, ``python -m MODULE serve …``) after the gateway in every round of the full-rate
and 40 msg/s groups, reported against the gateway and Bun (closeness_report.py).

Then every target as a ratio: the verdict's (to Bun, to one in-memory worker, or to the
20 KiB budget) and the gateway's figure against Bun and against the seed. A ratio is the median
of per-round ratios when the runs were interleaved (each round's runs saw the same background
load), else the ratio of the single runs' figures.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from loadtest.bench.model import CLOSENESS_RATE, Load, Result
from loadtest.bench.targets import IDLE_KIB_BUDGET, cpu_of, p99_of

if TYPE_CHECKING:
    from loadtest.bench.scenarios import Bench

Rounds = dict[str, list[Result]]
Metric = Callable[[Result], float | None]

LIMITS = {"fanout_cpu": 2.0, "latency_cpu": 1.2, "latency_p99": 1.5, "workers_cpu": 1.3}
"""Issue 19: ratio to Bun at full rate and at 40k deliveries/s, and --workers 2 + Redis to one
in-memory worker; the idle budget is ``IDLE_KIB_BUDGET`` KiB per connection."""


async def run_closeness(bench: Bench) -> None:
    """The runs every closeness target needs. A failed run is recorded and its round goes on
    (its ratios then come from the other rounds' figures); a failed group, the next one runs."""
    o = bench.opts
    targets = bench.targets()
    if o.attach_url is None and o.variants:
        targets = [*targets, *o.variants]  # each variant after the gateway in every round
        bench.meta["variants"] = {name: " ".join(cmd) for name, cmd in o.variants.items()}
    full = Load(**{**asdict(o.load), "rate": None})
    fixed = Load(**{**asdict(o.load), "rate": o.load.rate or CLOSENESS_RATE})
    full_runs = [(f"{t}-fanout", bench.chat_run(t, full)) for t in targets]
    if "fanout" not in o.groups:
        full_runs = []
    if "gateway" in targets and o.attach_url is None and "workers" in o.groups:
        full_runs.append((f"gateway-workers{o.workers}", bench.redis_run(full, o.workers)))
    fixed_runs = [(f"{t}-latency", bench.chat_run(t, fixed)) for t in targets]
    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = []
    if full_runs:
        steps.append(("fanout", lambda: bench.repeated(kept(bench, full_runs), "cpu", o.repeat)))
    if "latency" in o.groups:
        steps.append(("latency", lambda: bench.repeated(kept(bench, fixed_runs), "p99", o.repeat)))
    if "idle" in o.groups:
        steps.append(("idle", bench.idle))
    for name, step in steps:
        try:
            await step()
        except Exception as exc:  # one failed group must not hide the others
            bench.failures[name] = why(exc)
            print(f"closeness {name} failed: {bench.failures[name]}", flush=True)
    bench.meta["closeness"] = [asdict(row) for row in closeness_rows(bench.results, bench.rounds)]


Run = Callable[[str], Awaitable[Result]]


def kept(bench: Bench, runs: list[tuple[str, Run]]) -> list[tuple[str, Run]]:
    """The runs, each returning an empty Result (no figures: never the median) when it fails."""

    def keep(run: Run) -> Run:
        async def attempt(label: str) -> Result:
            try:
                return await run(label)
            except Exception as exc:  # the seed at N=1000 on a busy host may time out
                bench.failures[label] = why(exc)
                print(f"closeness {label} failed: {bench.failures[label]}", flush=True)
                failed = Result(label=label, server=label.split("-")[0], scenario="chat", load="")
                failed.notes.append(f"failed: {bench.failures[label]}")
                return failed

        return attempt

    return [(label, keep(run)) for label, run in runs]


def why(exc: Exception) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()] or [""]
    return f"{type(exc).__name__}: {lines[0]}"[:400]


@dataclass
class TargetRow:
    """One target: the gateway's figure, what the verdict compares it with, and the ratios."""

    name: str
    unit: str
    gateway: float | None
    against: str  # what the verdict's ratio divides by
    against_value: float | None
    limit: float  # the verdict's ratio must not exceed it
    ratio: float | None
    rounds: list[float] = field(default_factory=list)  # per-round ratios behind ``ratio``
    to_bun: float | None = None
    to_seed: float | None = None
    detail: str = ""

    @property
    def met(self) -> bool | None:
        return None if self.ratio is None else self.ratio <= self.limit


def cpu_with_broker(r: Result) -> float | None:
    """CPU µs per delivery of the server and its broker together (Redis' CPU counts)."""
    if not r.deliveries:
        return None
    return (r.server_cpu_s + (r.broker_cpu_s or 0.0)) / r.deliveries * 1e6


SERVERS = ("gateway", "bun", "seed")


def delivered_per_s(r: Result) -> float | None:
    return r.deliveries_per_s or None  # a failed run delivered nothing: no figure


def figure(results: dict[str, Result], rounds: Rounds, key: str, metric: Metric) -> float | None:
    """A run's figure: the median over the rounds that have it, else the run's own."""
    values = sorted(v for v in (metric(x) for x in rounds.get(key, [])) if v is not None)
    if values:
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    run = results.get(key)
    return None if run is None else metric(run)


def ratio(
    results: dict[str, Result],
    rounds: Rounds,
    base: tuple[str, Metric],
    other: tuple[str, Metric],
) -> tuple[float | None, list[float]]:
    """other/base: the median of per-round ratios if both ran the same rounds, else of figures."""
    (bkey, bmetric), (okey, ometric) = base, other
    a, b = rounds.get(bkey, []), rounds.get(okey, [])
    if len(a) >= 2 and len(a) == len(b):
        pairs = [(bmetric(x), ometric(y)) for x, y in zip(a, b, strict=True)]
        per_round = [y / x for x, y in pairs if x and y is not None]
        if len(per_round) == len(a):
            ordered, mid = sorted(per_round), len(per_round) // 2
            med = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
            return med, per_round
    x, y = figure(results, rounds, bkey, bmetric), figure(results, rounds, okey, ometric)
    return (y / x if x and y is not None else None), []


def vs_bun_row(
    r: dict[str, Result], rounds: Rounds, group: str, metric: Metric, what: tuple[str, str, str]
) -> TargetRow | None:
    """A gateway-vs-Bun target in one run group (``fanout`` or ``latency``)."""
    name, unit, limit_key = what
    gw = f"gateway-{group}"
    if gw not in r or not (f"bun-{group}" in r or f"seed-{group}" in r):
        return None
    verdict, per_round = ratio(r, rounds, (f"bun-{group}", metric), (gw, metric))
    per_s = {t: figure(r, rounds, f"{t}-{group}", delivered_per_s) for t in SERVERS}
    rates = ", ".join(f"{t} {v:,.0f}/s" for t, v in per_s.items() if v is not None)
    return TargetRow(
        name=name,
        unit=unit,
        gateway=figure(r, rounds, gw, metric),
        against="Bun",
        against_value=figure(r, rounds, f"bun-{group}", metric),
        limit=LIMITS[limit_key],
        ratio=verdict,
        rounds=per_round,
        to_bun=verdict,
        to_seed=ratio(r, rounds, (f"seed-{group}", metric), (gw, metric))[0],
        detail=f"deliveries: {rates}",
    )


def workers_row(r: dict[str, Result], rounds: Rounds) -> TargetRow | None:
    fleets = [k for k in r if k.startswith("gateway-workers")]
    fleet = max(fleets, key=lambda k: int(k.removeprefix("gateway-workers")), default=None)
    single = "gateway-fanout" if "gateway-fanout" in r else "gateway-single"
    if fleet is None or single not in r:
        return None
    verdict, per_round = ratio(r, rounds, (single, cpu_of), (fleet, cpu_with_broker))
    redis = figure(r, rounds, fleet, lambda x: x.broker_cpu_s)
    return TargetRow(
        name=f"CPU per delivery, --workers {fleet.removeprefix('gateway-workers')} + Redis "
        "(its CPU included), full rate",
        unit="µs",
        gateway=figure(r, rounds, fleet, cpu_with_broker),
        against="one in-memory worker",
        against_value=figure(r, rounds, single, cpu_of),
        limit=LIMITS["workers_cpu"],
        ratio=verdict,
        rounds=per_round,
        to_bun=ratio(r, rounds, ("bun-fanout", cpu_of), (fleet, cpu_with_broker))[0],
        to_seed=ratio(r, rounds, ("seed-fanout", cpu_of), (fleet, cpu_with_broker))[0],
        detail="" if redis is None else f"redis-server {redis:.2f} s CPU in the window",
    )


def idle_row(r: dict[str, Result], rounds: Rounds) -> TargetRow | None:
    idle = r.get("gateway-idle")
    if idle is None or idle.rss_per_conn_kib is None:
        return None

    def kib(x: Result) -> float | None:
        return x.rss_per_conn_kib

    return TargetRow(
        name="idle memory per connection",
        unit="KiB",
        gateway=idle.rss_per_conn_kib,
        against="budget",
        against_value=IDLE_KIB_BUDGET,
        limit=1.0,
        ratio=idle.rss_per_conn_kib / IDLE_KIB_BUDGET,
        to_bun=ratio(r, rounds, ("bun-idle", kib), ("gateway-idle", kib))[0],
        to_seed=ratio(r, rounds, ("seed-idle", kib), ("gateway-idle", kib))[0],
        detail=f"{idle.alive or 0:,} of {idle.connections:,} answering",
    )


def closeness_rows(r: dict[str, Result], rounds: Rounds | None = None) -> list[TargetRow]:
    """Every issue-19 target these results have the runs for, in the issue's order."""
    rounds = rounds or {}
    cpu, at_40k = "CPU per delivery", "40k deliveries/s"
    rows = [
        vs_bun_row(r, rounds, "fanout", cpu_of, (f"{cpu}, full rate", "µs", "fanout_cpu")),
        vs_bun_row(r, rounds, "latency", cpu_of, (f"{cpu}, {at_40k}", "µs", "latency_cpu")),
        workers_row(r, rounds),
        vs_bun_row(r, rounds, "latency", p99_of, (f"p99, {at_40k}", "ms", "latency_p99")),
        idle_row(r, rounds),
    ]
    return [row for row in rows if row is not None]


def x(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


def render_row(row: TargetRow) -> str:
    gw = "n/a" if row.gateway is None else f"{row.gateway:.2f} {row.unit}"
    base = "n/a" if row.against_value is None else f"{row.against_value:.2f} {row.unit}"
    rounds = f"; rounds {', '.join(f'{v:.2f}' for v in row.rounds)}" if row.rounds else ""
    verdict = {None: "n/a", True: "**met**", False: "**not met**"}[row.met]
    detail = f" ({row.detail})" if row.detail else ""
    return (
        f"| {row.name} | {gw}{detail} | {row.against} {base} | "
        f"{x(row.ratio)} (≤ {row.limit:g}x{rounds}) | {verdict} | {x(row.to_bun)} | "
        f"{x(row.to_seed)} |"
    )


def closeness_table(r: dict[str, Result], rounds: Rounds | None = None) -> list[str]:
    """The targets as a Markdown table (no lines when none of its runs were made)."""
    rows = closeness_rows(r, rounds)
    if not rows:
        return []
    return [
        "| issue 19 target | gateway | against | ratio (limit) | verdict | gateway/Bun "
        "| gateway/seed |",
        "|---|---|---|---|---|---|---|",
        *(render_row(row) for row in rows),
    ]
