"""RESULTS.md's figures as PNGs in a ``plots/`` folder next to it: server CPU per delivery at
max rate, latency percentiles at a fixed rate, idle memory per connection.

Drawn from the same Results (and interleaved rounds) the report renders, so a run with
``--scenario all``, ``--render-from <json>`` and ``--plots-from-md`` draw the same figures as
the tables beside them. Matplotlib's Agg canvas, no pyplot: no display, no global state. The
PNGs carry no timestamp or version, so drawing the same figures again changes no byte.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from loadtest.bench.model import Result
from loadtest.bench.targets import IDLE_KIB_BUDGET

CPU_PNG = "cpu-per-delivery.png"
LATENCY_PNG = "latency-fixed-rate.png"
IDLE_PNG = "idle-memory.png"
PLOTS = (CPU_PNG, LATENCY_PNG, IDLE_PNG)

Rounds = dict[str, list[Result]]


def plots_dir(results_md: Path) -> Path:
    """Where the PNGs go: ``plots/`` beside RESULTS.md (``loadtest/plots/``)."""
    return results_md.parent / "plots"


SEED, GATEWAY, VARIANT = "#8c8c8c", "#1f77b4", "#ff7f0e"


def colour(key: str) -> str:
    """The seed grey, the gateway blue, experiments (the gateway with a change undone) orange."""
    if key.startswith("seed"):
        return SEED
    return GATEWAY if key.startswith("gateway") else VARIANT


WHAT = {
    "seed-fanout": "the seed",
    "gateway-fanout": "the gateway",
    "gateway-single": "1 worker, in memory (workers scenario)",
    "gateway-workers1": "1 worker through Redis",
    "gateway-workers2": "--workers 2 + Redis",
    "uncorked-fanout": "the gateway without write corking",
    "seed-idle": "the seed",
    "gateway-idle": "the gateway",
    "fastapiroute-idle": "WebSockets through FastAPI's router",
    "seed-latency": "the seed",
    "gateway-latency": "the gateway",
    "uncorked-latency": "without write corking",
}
"""What each run of a standard ``--scenario all --experiments`` run is, under its name."""


def name(key: str) -> str:
    return f"{key}\n{WHAT[key]}" if key in WHAT else key


@dataclass
class Bar:
    key: str  # the run's name in RESULTS.md's "Every run" table
    value: float
    rounds: list[float] = field(default_factory=list)  # every interleaved round's value


def bars(
    results: dict[str, Result],
    rounds: Rounds,
    keep: Callable[[str, Result], bool],
    metric: Callable[[Result], float | None],
) -> list[Bar]:
    out: list[Bar] = []
    for key, result in results.items():
        value = metric(result)
        if value is None or not keep(key, result):
            continue
        each = [v for v in (metric(r) for r in rounds.get(key, [])) if v is not None]
        out.append(Bar(key, value, each if len(each) > 1 else []))
    return out


def at_max_rate(key: str, r: Result) -> bool:
    return "rate max" in r.load


def at_fixed_rate(key: str, r: Result) -> bool:
    """The latency scenario's runs (the stalled scenario's control runs are not comparable)."""
    return key.endswith("-latency")


def idle(key: str, r: Result) -> bool:
    return r.load.endswith(" idle")


def cpu_bars(results: dict[str, Result], rounds: Rounds) -> list[Bar]:
    return bars(results, rounds, at_max_rate, lambda r: r.cpu_us_per_delivery)


def idle_bars(results: dict[str, Result]) -> list[Bar]:
    return bars(results, {}, idle, lambda r: r.rss_per_conn_kib)


def latency_runs(results: dict[str, Result]) -> dict[str, Result]:
    return {k: r for k, r in results.items() if at_fixed_rate(k, r) and r.p99_ms is not None}


def horizontal(ax: Axes, shown: list[Bar], unit: str, spec: str) -> None:
    """One bar per run, top to bottom in the report's order, each round as a black tick."""
    ys = list(range(len(shown)))[::-1]
    ax.barh(ys, [b.value for b in shown], color=[colour(b.key) for b in shown])
    ax.set_yticks(ys, [name(b.key) for b in shown], fontsize=8)
    for y, bar in zip(ys, shown, strict=True):
        if bar.rounds:
            ax.plot(bar.rounds, [y] * len(bar.rounds), "|", color="black", markersize=14)
        right = max([bar.value, *bar.rounds])
        ax.text(right, y, f"  {bar.value:{spec}} {unit}", va="center", fontsize=8)
    ax.set_xlim(0, max(v for b in shown for v in (b.value, *b.rounds)) * 1.25)
    ax.grid(axis="x", alpha=0.3)
    if any(b.rounds for b in shown):
        ax.text(
            0.99,
            0.01,
            "bar: the median run · black ticks: each interleaved round",
            transform=ax.transAxes,
            ha="right",
            fontsize=8,
            color="#555555",
        )


def figure(caption: str, title: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(8, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # the non-interactive Agg canvas draws the PNG
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    if caption:
        fig.supxlabel(caption, fontsize=8, color="#555555")
    return fig, ax


def save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def short_load(r: Result) -> str:
    """``N=1000, P=10, rate 40 msg/s`` of a run's load (not its sizes and durations)."""
    return ",".join(r.load.split(",")[:3])


def draw_cpu(shown: list[Bar], load: str, caption: str, path: Path) -> Path:
    fig, ax = figure(caption, f"Server CPU per delivered message, fan-out ({load})")
    horizontal(ax, shown, "µs", ".2f")
    ax.set_xlabel("µs of server CPU (utime+stime, all processes) per delivery; lower is better")
    seed = next((b.value for b in shown if b.key == "seed-fanout"), None)
    if seed is not None:
        ax.axvline(seed / 2, color=SEED, linestyle="--", linewidth=1)
        ax.annotate(
            " target: ≤ 0.5x seed",
            (seed / 2, 1.0),
            xycoords=("data", "axes fraction"),
            va="top",
            fontsize=8,
            color="#555555",
        )
    return save(fig, path)


def draw_latency(runs: dict[str, Result], rounds: Rounds, caption: str, path: Path) -> Path:
    load = short_load(next(iter(runs.values())))
    fig, ax = figure(caption, f"End-to-end latency at a fixed rate ({load})")
    width = 0.8 / 3
    for i, (pct, metric) in enumerate((("p50", "p50_ms"), ("p99", "p99_ms"), ("max", "max_ms"))):
        xs = [n + (i - 1) * width for n in range(len(runs))]
        values = [getattr(r, metric) or 0.0 for r in runs.values()]
        drawn = ax.bar(
            xs,
            values,
            width,
            label=pct,
            color=[colour(k) for k in runs],
            alpha=(0.45, 0.8, 1.0)[i],
            edgecolor="black",
            linewidth=0.5,
        )
        ax.bar_label(drawn, labels=[f"{v:.1f}" for v in values], label_type="center", fontsize=8)
        if pct == "p99":
            for x, key in zip(xs, runs, strict=True):
                each = [r.p99_ms for r in rounds.get(key, []) if r.p99_ms is not None]
                if len(each) > 1:
                    ax.plot([x] * len(each), each, "_", color="black", markersize=14)
    ax.set_xticks(range(len(runs)), [f"{name(k)}\n(p50 · p99 · max)" for k in runs], fontsize=8)
    ax.set_ylabel("ms, send to arrival; lower is better")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.12)  # room for the note above the tallest bar
    ax.grid(axis="y", alpha=0.3)
    ax.text(
        0.01,
        0.98,
        "bars: the median run's p50, p99, max · black ticks: each interleaved round's p99",
        transform=ax.transAxes,
        va="top",
        fontsize=8,
        color="#555555",
    )
    return save(fig, path)


def draw_idle(shown: list[Bar], results: dict[str, Result], caption: str, path: Path) -> Path:
    conns = {results[b.key].connections for b in shown}
    many = f"{conns.pop():,} connections" if len(conns) == 1 else "idle connections"
    fig, ax = figure(caption, f"Server memory per idle connection ({many})")
    horizontal(ax, shown, "KiB", ".1f")
    ax.axvline(IDLE_KIB_BUDGET, color=SEED, linestyle="--", linewidth=1)
    ax.annotate(
        f" budget: {IDLE_KIB_BUDGET:g} KiB",
        (IDLE_KIB_BUDGET, 1.0),
        xycoords=("data", "axes fraction"),
        va="top",
        fontsize=8,
        color="#555555",
    )
    right = ax.get_xlim()[1]
    ax.set_xlim(0, max(right, IDLE_KIB_BUDGET * 1.25))
    ax.set_xlabel("KiB of RSS per connection (loaded - before) / connections; lower is better")
    return save(fig, path)


def write_plots(
    directory: Path, results: dict[str, Result], rounds: Rounds, caption: str = ""
) -> list[Path]:
    """Draw every plot the results have figures for into ``directory``; a plot they have no
    figures for is removed there, so no PNG is left over from an earlier run."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    cpu, runs, mem = cpu_bars(results, rounds), latency_runs(results), idle_bars(results)
    if cpu:
        load = short_load(results[cpu[0].key])
        written.append(draw_cpu(cpu, load, caption, directory / CPU_PNG))
    if runs:
        written.append(draw_latency(runs, rounds, caption, directory / LATENCY_PNG))
    if mem:
        written.append(draw_idle(mem, results, caption, directory / IDLE_PNG))
    for name in PLOTS:
        if directory / name not in written:
            (directory / name).unlink(missing_ok=True)
    return written
