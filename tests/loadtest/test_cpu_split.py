"""A run's CPU split into user and system time, the closeness scenario's ``--groups`` and
``--variant``, and the tables that report the split and the variants (issue 19)."""

from __future__ import annotations

import os
import sys
import time

import pytest

from loadtest import procstat
from loadtest.bench.cli import parse_args
from loadtest.bench.closeness import run_closeness
from loadtest.bench.closeness_report import split_table, variant_table
from loadtest.bench.model import Load, Result, median_run
from loadtest.bench.scenarios import Bench
from tests.support.bench import chat_result


def run(label: str, user_us: float, sys_us: float) -> Result:
    return chat_result(label, user_us + sys_us, user_us=user_us, sys_us=sys_us)


def test_user_and_system_time_of_a_process_add_up_to_its_cpu_time() -> None:
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # some user time to read
        pass
    user, system = procstat.cpu_split([os.getpid()])
    total = procstat.cpu_seconds([os.getpid()])
    assert user > 0
    # Read a moment later: a tick or so more (or the same, give or take a float's rounding:
    # 76.82 - (74.92 + 1.9) is -1.4e-14, and failed a CI run).
    assert -1e-9 <= total - (user + system) <= 0.05


def test_a_run_shows_its_split_per_delivery_and_a_median_lists_every_rounds() -> None:
    a, b, c = (
        run("gateway-latency#1", 6.0, 12.0),
        run("gateway-latency#2", 5.0, 11.0),
        run("gateway-latency#3", 7.0, 13.0),
    )
    assert a.user_sys_us() == pytest.approx((6.0, 12.0))
    assert "usr/sys=6.00/12.00us" in a.line()
    merged = median_run([a, b, c], by="cpu")
    assert merged.user_sys_us() == pytest.approx((6.0, 12.0))
    assert "µs user/sys per delivery: 6.00/12.00, 5.00/11.00, 7.00/13.00" in merged.notes[-1]
    old = Result(label="x", server="x", scenario="chat", load="", deliveries=10)
    assert old.user_sys_us() is None  # a run from before the split: nothing made up
    assert "usr/sys" not in old.line()


def rounds() -> tuple[dict[str, Result], dict[str, list[Result]]]:
    made = {
        "bun-latency": [run("bun-latency", 4.0, 4.0) for _ in range(3)],
        "gateway-latency": [run("gateway-latency", u, 12.0) for u in (6.0, 6.0, 6.0)],
        "direct-latency": [run("direct-latency", 5.0, s) for s in (12.0, 9.0, 10.0)],
    }
    return {key: runs[1] for key, runs in made.items()}, made


def test_the_split_table_shows_each_runs_system_share_and_rounds() -> None:
    results, made = rounds()
    lines = split_table(results, made)
    assert "| gateway-latency | 18.00 | 6.00 | 12.00 | 67% | 6.00/12.00, 6.00/12.00, " in "\n".join(
        lines
    )
    assert (
        split_table({"x-idle": Result(label="x", server="x", scenario="idle", load="")}, {}) == []
    )


def test_a_variant_is_compared_with_the_gateway_of_the_same_rounds() -> None:
    results, made = rounds()
    (row,) = [line for line in variant_table(results, made, ["direct"]) if "direct," in line]
    # The median of 17, 14, 15 µs (not round 2's 14); per round 17/18, 14/18, 15/18;
    # user 5/6 each; system 12/12, 9/12, 10/12; to Bun 15/8.
    assert (
        "| direct, 40k deliveries/s | 15.00 µs | 18.00 µs | 0.83x (rounds 0.94, 0.78, 0.83)" in row
    )
    assert row.endswith("| 0.83x | 0.83x | 1.88x |")
    assert variant_table(results, made, ["other"]) == []


def test_groups_and_variants_come_from_the_command_line() -> None:
    opts = parse_args(
        ["--scenario", "closeness", "--groups", "latency", "--variant", "direct=some.module"]
    )
    assert opts.groups == ["latency"]
    assert opts.variants == {"direct": [sys.executable, "-m", "some.module"]}
    assert parse_args(["--scenario", "closeness"]).groups == [
        "fanout",
        "workers",
        "latency",
        "idle",
    ]
    for bad in (["--groups", "storm"], ["--variant", "gateway=m"], ["--variant", "x-y=m"]):
        with pytest.raises(SystemExit):
            parse_args(["--scenario", "closeness", *bad])


async def test_only_the_chosen_groups_run_with_each_variant_after_the_gateway() -> None:
    argv = ["--scenario", "closeness", "--target", "bun,gateway", "--groups", "latency"]
    bench = Bench(parse_args([*argv, "--variant", "direct=some.module", "--repeat", "2"]))
    ran: list[str] = []

    def chat_run(target: str, load: Load, *args: object, **kw: object) -> object:
        async def go(label: str) -> Result:
            assert load.rate == 40.0
            ran.append(label)
            return run(label, 1.0, 1.0)

        return go

    bench.chat_run = chat_run  # type: ignore[assignment,method-assign]
    await run_closeness(bench)
    assert ran == [
        "bun-latency#1",
        "gateway-latency#1",
        "direct-latency#1",
        "bun-latency#2",
        "gateway-latency#2",
        "direct-latency#2",
    ]
    assert bench.meta["variants"] == {"direct": f"{sys.executable} -m some.module"}
    assert not bench.failures
