"""Issue 19's targets table (``--scenario closeness``) from made-up runs — ratios to Bun, to one
in-memory worker and to the seed — its RESULTS.md block, and the arguments that choose its
servers and its Redis."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from loadtest.bench.cli import main, parse_args
from loadtest.bench.closeness import closeness_rows, closeness_table, cpu_with_broker, kept
from loadtest.bench.closeness_report import CLOSENESS_BEGIN, CLOSENESS_END
from loadtest.bench.model import Result
from loadtest.bench.scenarios import Bench
from tests.support.bench import chat_result


def run(label: str, cpu_us: float, p99: float = 5.0, broker_s: float | None = None) -> Result:
    return chat_result(label, cpu_us, p99=p99, broker_s=broker_s)


def three_rounds() -> tuple[dict[str, Result], dict[str, list[Result]]]:
    rounds = {
        "bun-fanout": [run("bun-fanout", c) for c in (1.0, 2.0, 1.0)],
        "gateway-fanout": [run("gateway-fanout", c) for c in (1.9, 3.0, 2.5)],
        "seed-fanout": [run("seed-fanout", c) for c in (10.0, 10.0, 10.0)],
        # 3.0 µs of workers + 0.5 s of Redis over a million deliveries = 3.5 µs in all.
        "gateway-workers2": [run("gateway-workers2", 3.0, broker_s=0.5) for _ in range(3)],
    }
    results = {key: runs[0] for key, runs in rounds.items()}
    return results, rounds


def test_a_ratio_is_the_median_of_the_per_round_ratios() -> None:
    results, rounds = three_rounds()
    full_rate = closeness_rows(results, rounds)[0]
    assert full_rate.rounds == pytest.approx([1.9, 1.5, 2.5])
    assert full_rate.ratio == pytest.approx(1.9)
    assert full_rate.met is True
    assert full_rate.gateway == pytest.approx(2.5)  # median over rounds, not the first run
    assert full_rate.to_seed == pytest.approx(0.25)


def test_the_workers_target_counts_redis_cpu_against_one_in_memory_worker() -> None:
    results, rounds = three_rounds()
    assert cpu_with_broker(results["gateway-workers2"]) == pytest.approx(3.5)
    workers = next(row for row in closeness_rows(results, rounds) if "--workers 2" in row.name)
    assert workers.rounds == pytest.approx([3.5 / 1.9, 3.5 / 3.0, 3.5 / 2.5])
    assert workers.ratio == pytest.approx(3.5 / 2.5)
    assert workers.met is False  # 1.4x > 1.3x
    assert workers.to_bun == pytest.approx(3.5)  # median of 3.5, 1.75, 3.5


async def test_a_failed_run_is_recorded_and_the_other_rounds_give_the_ratio() -> None:
    bench = Bench(parse_args(["--scenario", "closeness", "--repeat", "3"]))
    seed_cpu = iter([8.0, None, 12.0])

    async def seed(label: str) -> Result:
        cpu = next(seed_cpu)
        if cpu is None:
            raise ConnectionError("could not connect")
        return run(label, cpu)

    async def gateway(label: str) -> Result:
        return run(label, 2.0)

    runs = kept(bench, [("seed-fanout", seed), ("gateway-fanout", gateway)])
    await bench.repeated(runs, "cpu", 3)
    assert bench.failures == {"seed-fanout#2": "ConnectionError: could not connect"}
    assert bench.results["seed-fanout"].cpu_us_per_delivery == 8.0  # of the two that ran
    (row,) = closeness_rows(bench.results, bench.rounds)
    assert row.to_seed == pytest.approx(2.0 / 10.0)  # the seed's median over the rounds it ran


def test_single_runs_are_compared_by_their_figures_and_absent_runs_leave_no_row() -> None:
    results = {
        "bun-latency": run("bun-latency", 10.0, p99=4.0),
        "gateway-latency": run("gateway-latency", 13.0, p99=7.0),
    }
    rows = {row.name: row for row in closeness_rows(results)}
    assert set(rows) == {"CPU per delivery, 40k deliveries/s", "p99, 40k deliveries/s"}
    cpu, p99 = rows["CPU per delivery, 40k deliveries/s"], rows["p99, 40k deliveries/s"]
    assert cpu.ratio == pytest.approx(1.3)
    assert (cpu.met, cpu.rounds) == (False, [])
    assert p99.ratio == pytest.approx(1.75)
    assert p99.met is False
    assert cpu.to_seed is None  # no seed run: said as n/a, not guessed
    assert "| n/a |" in closeness_table(results)[2]


def test_idle_memory_is_judged_against_the_budget_and_compared_with_bun() -> None:
    idle = {
        name: Result(label=name, server=name, scenario="idle", load="20000 idle")
        for name in ("gateway-idle", "bun-idle")
    }
    idle["gateway-idle"].rss_per_conn_kib, idle["bun-idle"].rss_per_conn_kib = 18.0, 6.0
    idle["gateway-idle"].alive = idle["gateway-idle"].connections = 20_000
    (row,) = closeness_rows(idle)
    assert row.ratio == pytest.approx(0.9)
    assert row.met is True
    assert row.to_bun == pytest.approx(3.0)
    assert "20,000 of 20,000 answering" in closeness_table(idle)[2]


def test_nothing_to_compare_with_prints_no_table() -> None:
    assert closeness_table({"gateway-fanout": run("gateway-fanout", 2.0)}) == []
    with_seed = {"gateway-fanout": run("gateway-fanout", 2.0), "seed-fanout": run("seed", 8.0)}
    (row,) = closeness_rows(with_seed)
    assert (row.ratio, row.met) == (None, None)  # no Bun run: no verdict, but the seed's ratio
    assert row.to_seed == pytest.approx(0.25)


def test_closeness_runs_all_three_servers_and_a_private_redis_by_default() -> None:
    opts = parse_args(["--scenario", "closeness"])
    assert opts.targets == ["seed", "bun", "gateway"]
    assert opts.private_redis
    assert opts.load.rate is None
    assert opts.idle_seconds == 3.0


def test_target_lists_and_a_shared_redis_on_request() -> None:
    assert parse_args(["--target", "bun,gateway"]).targets == ["bun", "gateway"]
    assert parse_args([]).targets == ["seed", "gateway"]
    assert parse_args(["--target", "all"]).targets == ["seed", "bun", "gateway"]
    shared = parse_args(["--scenario", "workers", "--redis-url", "redis://127.0.0.1:6379/3"])
    assert (shared.private_redis, shared.redis_url) == (False, "redis://127.0.0.1:6379/3")


@pytest.mark.parametrize("bad", ["node", "bun,bun", ","])
def test_an_unknown_or_repeated_target_is_refused(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--target", bad])
    assert "at most once" in capsys.readouterr().err


def test_render_from_rewrites_only_the_closeness_block(tmp_path: Path) -> None:
    results, rounds = three_rounds()
    raw = tmp_path / "closeness.json"
    raw.write_text(
        json.dumps(
            {
                "command": "python -m loadtest.bench --scenario closeness --repeat 3",
                "started_utc": "2026-12-06 02:00",
                "loadavg": "0.12 0.30 0.40 1/200 1",
                "meta": {"bun_version": "1.4.5", "servers": {"bun-fanout": ["bun", "s.ts"]}},
                "results": {k: asdict(v) for k, v in results.items()},
                "rounds": {k: [asdict(x) for x in v] for k, v in rounds.items()},
                "failures": {"seed-latency#2": "ConnectionError: could not connect"},
                "elapsed_s": 540.0,
            }
        )
    )
    md = tmp_path / "RESULTS.md"
    old = f"{CLOSENESS_BEGIN}\nold figures\n{CLOSENESS_END}"
    md.write_text(f"# Results\n\nkept\n\n{old}\n\nkept too\n")
    assert main(["--render-from", str(raw), "--results-md", str(md)]) == 0
    text = md.read_text()
    block = text[text.index(CLOSENESS_BEGIN) : text.index(CLOSENESS_END)]
    assert "old figures" not in text
    assert text.startswith("# Results\n\nkept\n\n")
    assert text.endswith("\n\nkept too\n")
    assert "load average before: 0.12 0.30 0.40" in block
    assert "bun 1.4.5" in block
    assert "| CPU per delivery, full rate | 2.50 µs" in block
    assert "- failed: seed-latency#2: ConnectionError: could not connect" in block
    assert main(["--render-from", str(raw), "--results-md", str(md)]) == 0
    assert md.read_text() == text  # the same block every time
