"""The targets table: each target the gateway is measured against, its figures, the ratio and
the verdict. A ratio is paired (the median of per-round ratios) when the runs were interleaved.
"""

from __future__ import annotations

from collections.abc import Callable

from loadtest.bench.model import Result, default_idle_connections, fmt

Rounds = dict[str, list[Result]]

IDLE_KIB_BUDGET = 20.0
"""The idle target: at most this many KiB of server memory per idle connection."""


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def paired(
    rounds: dict[str, list[Result]], base: str, other: str, metric: Callable[[Result], float | None]
) -> tuple[float, list[float]] | None:
    """Median of per-round ratios other/base over interleaved rounds (None: no such rounds)."""
    a, b = rounds.get(base, []), rounds.get(other, [])
    if len(a) < 2 or len(a) != len(b):
        return None
    ratios: list[float] = []
    for x, y in zip(a, b, strict=True):
        mx, my = metric(x), metric(y)
        if not mx or my is None:
            return None
        ratios.append(my / mx)
    ordered = sorted(ratios)
    return ordered[(len(ordered) - 1) // 2] if len(ordered) % 2 else (
        (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    ), ratios


def ratio_text(medians: float, pair: tuple[float, list[float]] | None) -> tuple[float, str]:
    """The ratio a verdict uses (paired when there are rounds) and how to show it."""
    if pair is None:
        return medians, f"{medians:.2f}x"
    value, ratios = pair
    rounds = ", ".join(f"{x:.2f}" for x in ratios)
    return value, (
        f"{value:.2f}x (median of per-round ratios {rounds}; ratio of the medians {medians:.2f}x)"
    )


def cpu_of(x: Result) -> float | None:
    return x.cpu_us_per_delivery


def p99_of(x: Result) -> float | None:
    return x.p99_ms


def targets_table(r: dict[str, Result], rounds: Rounds | None = None) -> list[str]:
    rounds = rounds or {}
    rows: list[str] = []
    for row in (fanout_row, latency_row, stalled_row, idle_row, workers_row):
        rows.extend(row(r, rounds))
    return rows


def fanout_row(r: dict[str, Result], rounds: Rounds) -> list[str]:
    seed, gw = r.get("seed-fanout"), r.get("gateway-fanout")
    if not (seed and gw and seed.cpu_us_per_delivery and gw.cpu_us_per_delivery):
        return []
    ratio, shown = ratio_text(
        gw.cpu_us_per_delivery / seed.cpu_us_per_delivery,
        paired(rounds, "seed-fanout", "gateway-fanout", cpu_of),
    )
    return [
        f"| CPU per delivery ≤ 0.5x seed (N=1000, P=10, max) | gateway "
        f"{gw.cpu_us_per_delivery:.2f} µs, seed {seed.cpu_us_per_delivery:.2f} µs | "
        f"{shown} | {verdict(ratio <= 0.5)} |"
    ]


def latency_row(r: dict[str, Result], rounds: Rounds) -> list[str]:
    seed, gw = r.get("seed-latency"), r.get("gateway-latency")
    if not (seed and gw and seed.p99_ms and gw.p99_ms):
        return []
    ratio, shown = ratio_text(
        gw.p99_ms / seed.p99_ms, paired(rounds, "seed-latency", "gateway-latency", p99_of)
    )
    return [
        f"| p99 at 40k deliveries/s ≤ seed | gateway {gw.p99_ms:.2f} ms "
        f"({gw.deliveries_per_s:,.0f}/s), seed {seed.p99_ms:.2f} ms "
        f"({seed.deliveries_per_s:,.0f}/s) | {shown} | {verdict(ratio <= 1.0)} |"
    ]


def stalled_row(r: dict[str, Result], rounds: Rounds) -> list[str]:
    ctl, stl = r.get("gateway-control"), r.get("gateway-stalled")
    seed_stl = r.get("seed-stalled")
    if not (ctl and stl and stl.delivered_ratio is not None and ctl.p99_ms and stl.p99_ms):
        return []
    pair = paired(rounds, "gateway-control", "gateway-stalled", p99_of)
    ratio, shown = ratio_text(stl.p99_ms / ctl.p99_ms, pair)
    # Unchanged: within 20 % of the control (or 1 ms, whichever is larger).
    unchanged = ratio <= max(1.2, 1.0 + 1.0 / ctl.p99_ms)
    full = stl.delivered_ratio >= 0.9999
    seed_part = (
        f"; seed delivered {seed_stl.delivered_ratio:.1%}"
        if seed_stl and seed_stl.delivered_ratio is not None
        else ""
    )
    return [
        f"| 1 stalled of 100: 100 % delivered to the others, p99 unchanged | delivered "
        f"{stl.delivered_ratio:.2%}, p99 {stl.p99_ms:.2f} ms vs {ctl.p99_ms:.2f} ms without"
        f"{seed_part} | p99 {shown} | {verdict(full and unchanged)} |"
    ]


def idle_row(r: dict[str, Result], rounds: Rounds) -> list[str]:
    idle = r.get("gateway-idle")
    if not (idle and idle.rss_per_conn_kib is not None):
        return []
    alive = idle.alive or 0
    cap = default_idle_connections()
    ok = alive >= min(20_000, cap) and idle.rss_per_conn_kib <= IDLE_KIB_BUDGET
    capped = ""
    if cap < 20_000:
        capped = f" (the open-file hard limit caps a process at {cap + 100:,} fds)"
    return [
        f"| ≥ 20k idle connections on one worker, ≤ 20 KiB each | {alive:,} answering{capped}, "
        f"{idle.rss_per_conn_kib:.1f} KiB/connection | "
        f"{idle.rss_per_conn_kib / IDLE_KIB_BUDGET:.2f}x of budget | {verdict(ok)} |"
    ]


def workers_row(r: dict[str, Result], rounds: Rounds) -> list[str]:
    fleets = [k for k in r if k.startswith("gateway-workers")]
    # The run with the most workers (the scenario may add one worker through Redis beside it).
    fleet = max(fleets, key=lambda k: int(k.removeprefix("gateway-workers")), default=None)
    one, two = r.get("gateway-single") or r.get("gateway-fanout"), r.get(fleet or "")
    if not (one and two and one.cpu_us_per_delivery and two.cpu_us_per_delivery):
        return []
    ratio, shown = ratio_text(
        two.cpu_us_per_delivery / one.cpu_us_per_delivery,
        paired(rounds, "gateway-single", two.label, cpu_of),
    )
    return [
        f"| --workers 2 + Redis: CPU/delivery ≤ 1.5x one worker | "
        f"{two.cpu_us_per_delivery:.2f} µs vs {one.cpu_us_per_delivery:.2f} µs "
        f"(+ redis-server {fmt(two.broker_cpu_s, '.2f')} s CPU in the window) | "
        f"{shown} | {verdict(ratio <= 1.5)} |"
    ]
