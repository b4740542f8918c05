"""What a benchmark run is given (Load, Options) and what it measured (Result).

These are the raw JSON's shape too: ``--render-from`` rebuilds them from a saved run, so a
field renamed here no longer reads an older file.
"""

from __future__ import annotations

import resource
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtest.servers import WireFormat

SCENARIOS = ("fanout", "latency", "stalled", "idle", "workers", "storm", "closeness", "all")

SERVER_KINDS = ("seed", "bun", "gateway")
"""What ``--target`` can start: the seed baseline, Bun's pub/sub (the reference), the gateway."""

STORM_RUNS = ("single", "baseline", "fleet")

CLOSENESS_GROUPS = ("fanout", "workers", "latency", "idle")
"""``--scenario closeness``'s run groups, in the order they run (``--groups`` picks some)."""

# Defaults per scenario (any of them can be overridden on the command line).
PRESETS: dict[str, dict[str, str | int | float]] = {
    "fanout": {"subscribers": 1000, "publishers": 10, "rate": "max", "duration": 10.0,
               "warmup": 3.0, "msg_bytes": 64},
    "latency": {"subscribers": 1000, "publishers": 10, "rate": 40.0, "duration": 20.0,
                "warmup": 3.0, "msg_bytes": 64},
    "stalled": {"subscribers": 100, "publishers": 1, "rate": 500.0, "duration": 20.0,
                "warmup": 1.0, "msg_bytes": 900},
    "workers": {"subscribers": 1000, "publishers": 10, "rate": "max", "duration": 10.0,
                "warmup": 3.0, "msg_bytes": 64},
    # Issue 19's targets in one invocation: full rate, then 40 msg/s (CLOSENESS_RATE), shorter
    # windows than the single scenarios' so that three servers in --repeat rounds fit ~10 min.
    "closeness": {"subscribers": 1000, "publishers": 10, "rate": "max", "duration": 6.0,
                  "warmup": 2.0, "msg_bytes": 64},
}  # fmt: skip

CLOSENESS_RATE = 40.0
"""Messages/s of the closeness scenario's fixed-rate runs: 40k deliveries/s to N=1000."""

SHARED_REDIS_URL = "redis://127.0.0.1:6379/14"


@dataclass
class Load:
    subscribers: int = 1000
    publishers: int = 10
    rate: float | None = None  # total messages/s; None = max (closed loop)
    duration: float = 10.0
    warmup: float = 3.0
    window: int = 20  # messages in flight at rate max
    msg_bytes: int = 64  # size of a message's text (marker included)
    stalled: int = 0  # subscribers that stop reading
    room: str = "lobby"
    connect_concurrency: int = 200  # handshakes in flight while connecting

    def describe(self) -> str:
        rate = "max" if self.rate is None else f"{self.rate:g} msg/s"
        stalled = f", {self.stalled} stalled" if self.stalled else ""
        return (
            f"N={self.subscribers}, P={self.publishers}, rate {rate}, {self.msg_bytes} B text, "
            f"{self.duration:g} s measured after {self.warmup:g} s warm-up{stalled}"
        )


@dataclass
class Result:
    label: str
    server: str
    scenario: str
    load: str
    connections: int = 0
    recipients: int = 0  # deliveries one message makes (per probe)
    sent: int = 0
    deliveries: int = 0  # in the measured window
    deliveries_per_s: float = 0.0
    delivered_ratio: float | None = None  # to the non-stalled receivers, whole run
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    server_cpu_s: float = 0.0
    server_cpu_util: float = 0.0  # of one core
    server_user_s: float | None = None  # of server_cpu_s: utime (None: not recorded)
    server_sys_s: float | None = None  # of server_cpu_s: stime, the kernel on its behalf
    cpu_us_per_delivery: float | None = None
    broker_cpu_s: float | None = None
    window_s: float = 0.0  # length of the measured window
    gen_cpu_util: float = 0.0  # of one core
    core_busy: list[float] = field(default_factory=list)  # every core, irq/softirq included
    rss_base_mib: float = 0.0
    rss_loaded_mib: float = 0.0
    rss_per_conn_kib: float | None = None
    idle_cpu_util: float | None = None
    alive: int | None = None
    errors: int = 0
    last_error: str = ""
    closes: dict[str, int] = field(default_factory=dict)
    unexpected_eof: int = 0
    processes: int = 0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        def f(v: float | None, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        parts = [
            f"{self.label:<22}",
            f"conns={self.connections}",
            f"deliv/s={self.deliveries_per_s:,.0f}",
            f"p50={f(self.p50_ms, '.2f')}ms p99={f(self.p99_ms, '.2f')}ms "
            f"max={f(self.max_ms, '.1f')}ms",
            f"cpu/deliv={f(self.cpu_us_per_delivery, '.2f')}us",
            *([f"usr/sys={split}us"] if (split := self.split_text()) else []),
            f"srv={self.server_cpu_util:.0%} gen={self.gen_cpu_util:.0%}",
        ]
        if self.core_busy:
            parts.append("cores=" + "/".join(f"{b:.0%}" for b in self.core_busy))
        if self.delivered_ratio is not None:
            parts.append(f"delivered={self.delivered_ratio:.2%}")
        if self.rss_per_conn_kib is not None:
            parts.append(f"rss/conn={self.rss_per_conn_kib:.1f}KiB")
        if self.alive is not None:
            parts.append(f"alive={self.alive}")
        if self.idle_cpu_util is not None:
            parts.append(f"idle-cpu={self.idle_cpu_util:.1%}")
        if self.errors:
            parts.append(f"errors={self.errors}")
        if self.closes:
            parts.append(f"closes={self.closes}")
        return " ".join(parts)

    def user_sys_us(self) -> tuple[float, float] | None:
        """µs of user and of system CPU per delivery (None: not recorded, or no deliveries)."""
        if self.server_user_s is None or self.server_sys_s is None or not self.deliveries:
            return None
        return self.server_user_s / self.deliveries * 1e6, self.server_sys_s / self.deliveries * 1e6

    def split_text(self) -> str:
        split = self.user_sys_us()
        return "" if split is None else f"{split[0]:.2f}/{split[1]:.2f}"


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return float(sorted_values[index])


def fmt(v: float | None, spec: str = ".2f", unit: str = "") -> str:
    return "n/a" if v is None else f"{format(v, spec)}{unit}"


def median_run(results: list[Result], by: str = "p99") -> Result:
    """The run with the median p99 (or CPU per delivery), with the worst delivered ratio."""

    def value(r: Result) -> float:
        v = r.p99_ms if by == "p99" else r.cpu_us_per_delivery
        return v if v is not None else float("inf")

    ranked = sorted(results, key=value)
    # A round that measured nothing (a failed run) is never the median while another has figures.
    measured = [r for r in ranked if value(r) != float("inf")] or ranked
    chosen = measured[(len(measured) - 1) // 2]
    ratios = [r.delivered_ratio for r in results if r.delivered_ratio is not None]
    merged = Result(**{**asdict(chosen), "notes": list(chosen.notes)})
    merged.label = chosen.label.split("#")[0]
    if ratios:
        merged.delivered_ratio = min(ratios)
    p99s = ", ".join(fmt(r.p99_ms) for r in results)
    cpus = ", ".join(fmt(r.cpu_us_per_delivery) for r in results)
    delivered = ", ".join(fmt(r.delivered_ratio, ".2%") for r in results)
    what = "p99" if by == "p99" else "CPU/delivery"
    splits = ", ".join(r.split_text() or "-" for r in results)
    split = f"; µs user/sys per delivery: {splits}" if any(r.split_text() for r in results) else ""
    merged.notes.append(
        f"median of {len(results)} interleaved runs by {what} (p99 ms: {p99s}; "
        f"µs CPU/delivery: {cpus}; delivered: {delivered}{split})"
    )
    return merged


def preset_load(scenario: str, base: Load, **over: Any) -> Load:
    p = PRESETS[scenario]
    rate = None if p["rate"] == "max" else float(p["rate"])
    fields: dict[str, Any] = {
        **asdict(base),
        "subscribers": int(p["subscribers"]),
        "publishers": int(p["publishers"]),
        "rate": rate,
        "duration": float(p["duration"]),
        "warmup": float(p["warmup"]),
        "msg_bytes": int(p["msg_bytes"]),
    }
    if scenario == "latency":
        fields["subscribers"], fields["publishers"] = base.subscribers, base.publishers
    fields.update(over)
    return Load(**fields)


@dataclass
class Options:
    scenario: str
    targets: list[str]
    load: Load
    attach_url: str | None
    wire: WireFormat
    server_core: str | None
    gen_core: int | None
    idle_connections: int
    idle_seconds: float
    idle_room_each: bool
    experiments: bool
    repeat: int
    gateway_command: list[str] | None
    workers: int
    redis_url: str
    private_redis: bool
    send_queue: int | None
    gateway_env: dict[str, str]
    json_out: Path | None
    results_md: Path
    render_from: Path | None
    command: str
    plots_from_md: bool = False
    storm_sizes: list[int] = field(default_factory=lambda: [3000, 10000])
    storm_generators: int = 4
    storm_runs: list[str] = field(default_factory=lambda: list(STORM_RUNS))
    storm_deadline: float = 120.0
    handshake_timeout: float = 10.0
    groups: list[str] = field(default_factory=lambda: list(CLOSENESS_GROUPS))
    variants: dict[str, list[str]] = field(default_factory=dict)
    """Closeness: gateway variants by name, each the command run instead of ``gateway``."""


def default_idle_connections() -> int:
    """20k, unless the hard open-file limit (server and generator hold one fd each) is lower."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return 20_000
    return max(100, min(20_000, hard - 100))
