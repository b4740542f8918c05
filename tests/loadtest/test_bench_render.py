"""``python -m loadtest.bench --render-from``: a saved run's raw JSON rewrites RESULTS.md's
generated block, and only that block, the same way every time."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from loadtest.bench.model import Result
from loadtest.bench.report import BEGIN, END
from loadtest.bench.storm import Phase, StormResult
from loadtest.bench.storm_report import STORM_BEGIN, STORM_END

REPO = Path(__file__).resolve().parents[2]


def run(label: str, cpu_us: float, p99: float) -> Result:
    return Result(
        label=label,
        server=label.split("-")[0],
        scenario="chat",
        load="N=1000, P=10, rate max",
        connections=1010,
        deliveries=100_000,
        deliveries_per_s=10_000.0,
        p99_ms=p99,
        cpu_us_per_delivery=cpu_us,
        delivered_ratio=1.0,
        notes=[f"{label} noted"],
    )


def raw_run(path: Path) -> None:
    results = {
        "seed-fanout": run("seed-fanout", 8.0, 5.0),
        "gateway-fanout": run("gateway-fanout", 2.0, 4.0),
    }
    path.write_text(
        json.dumps(
            {
                "command": "python -m loadtest.bench --scenario all --repeat 1",
                "started_utc": "2026-01-02 03:04",
                "meta": {"gateway_source": "commit abc1234", "servers": {"seed-fanout": ["x"]}},
                "results": {k: asdict(v) for k, v in results.items()},
                "failures": {"idle": "OSError: too many open files"},
                "rounds": {},
                "elapsed_s": 61.0,
                "busy": [0.1, 0.2],
            }
        )
    )


def render(raw: Path, md: Path) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest.bench",
            "--render-from",
            str(raw),
            "--results-md",
            str(md),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return md.read_text()


def test_render_from_rewrites_only_the_block(tmp_path: Path) -> None:
    raw, md = tmp_path / "run.json", tmp_path / "RESULTS.md"
    raw_run(raw)
    md.write_text(f"# Findings\n\nkept above\n\n{BEGIN}\nstale\n{END}\n\nkept below\n")
    first = render(raw, md)
    assert first.startswith("# Findings\n\nkept above\n\n" + BEGIN)
    assert first.endswith(END + "\n\nkept below\n")
    assert "stale" not in first
    assert "Run 2026-01-02 03:04 UTC, 61 s" in first
    assert "python -m loadtest.bench --scenario all --repeat 1\n" in first
    assert "Gateway source: commit abc1234." in first
    assert "| gateway 2.00 µs, seed 8.00 µs | 0.25x | **met** |" in first
    assert "- gateway-fanout: gateway-fanout noted" in first
    assert "- idle: `OSError: too many open files`" in first
    assert render(raw, md) == first, "rendering a saved run again changes nothing"


def test_render_from_a_storm_run_rewrites_only_the_storm_block(tmp_path: Path) -> None:
    raw, md = tmp_path / "storm.json", tmp_path / "RESULTS.md"
    phase = Phase(clients=3000, admitted=3000, seconds=7.3, last_s=7.3, events_mean=11.4)
    phase.events_max, phase.bytes_mean, phase.kinds = 21, 3379.2, {"count": 31846}
    storm = StormResult(
        label="gateway-storm-3000", server="x", clients=3000, generators=4, storm=phase,
        processes=1,
    )  # fmt: skip
    raw.write_text(
        json.dumps(
            {
                "command": "python -m loadtest.bench --scenario storm --storm-sizes 3000",
                "started_utc": "2026-01-02 03:04",
                "loadavg": "0.50 0.40 0.30 1/100 42",
                "meta": {"gateway_source": "commit abc1234"},
                "results": {},
                "storms": {"gateway-storm-3000": asdict(storm)},
                "failures": {},
                "elapsed_s": 20.0,
            }
        )
    )
    kept = (
        f"# Findings\n\n{BEGIN}\nthe all block\n{END}\n\n{STORM_BEGIN}\nstale\n{STORM_END}\nend\n"
    )
    md.write_text(kept)
    first = render(raw, md)
    assert first.startswith(f"# Findings\n\n{BEGIN}\nthe all block\n{END}\n\n{STORM_BEGIN}\n")
    assert first.endswith(f"{STORM_END}\nend\n")
    assert "stale" not in first
    assert "python -m loadtest.bench --scenario storm --storm-sizes 3000\n" in first
    assert "Load average before the run (`/proc/loadavg`): 0.50 0.40 0.30 1/100 42." in first
    assert "| 3,000 admitted in ≤ 30 s on one process | gateway-storm-3000: 7.30 s | **met** |" in (
        first
    )
    assert "11.4 per client over 7.30 s = 1.56/s" in first
    assert render(raw, md) == first, "rendering a saved run again changes nothing"
