"""The benchmark's plots: drawn from a small synthetic result they are PNGs that decode, one per
figure the result has; ``--render-from`` writes them next to the RESULTS.md it rewrites, and
``--plots-from-md`` draws the same bytes from the figures that RESULTS.md's block prints.
Behaviour, not looks: what is in a picture is for a person to judge."""

from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from loadtest import procstat
from loadtest.bench import cli
from loadtest.bench.model import Result
from loadtest.bench.readback import RUN_LINE, read_block
from loadtest.bench.report import BEGIN, END
from loadtest.bench.scenarios import Bench
from tests.support.skips import IN_CI

REPO = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAMES = {"cpu-per-delivery.png", "latency-fixed-rate.png", "idle-memory.png"}

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None and not IN_CI,
    reason="matplotlib not installed (pip install -e '.[load]')",
)

MAX = "N=1000, P=10, rate max, 64 B text, 10 s measured after 3 s warm-up"
FIXED = "N=1000, P=10, rate 40 msg/s, 64 B text, 20 s measured after 3 s warm-up"


def chat(key: str, load: str, cpu: float, p50: float, p99: float, peak: float) -> Result:
    """A chat run whose figures print exactly (two decimals; max one) in RESULTS.md."""
    return Result(
        label=key,
        server=key.split("-")[0],
        scenario="chat",
        load=load,
        connections=1010,
        deliveries=400_000,
        deliveries_per_s=40_000.0,
        delivered_ratio=1.0,
        p50_ms=p50,
        p99_ms=p99,
        max_ms=peak,
        cpu_us_per_delivery=cpu,
        server_cpu_util=0.5,
        rss_per_conn_kib=16.5,
    )


def idle(key: str, kib: float) -> Result:
    return Result(
        label=key,
        server=key.split("-")[0],
        scenario="idle",
        load="2000 idle",
        connections=2000,
        rss_per_conn_kib=kib,
        alive=2000,
    )


def synthetic() -> tuple[dict[str, Result], dict[str, list[Result]]]:
    results = {
        "seed-fanout": chat("seed-fanout", MAX, 16.5, 300.25, 600.5, 650.5),
        "gateway-fanout": chat("gateway-fanout", MAX, 4.25, 80.5, 130.75, 180.5),
        "seed-latency": chat("seed-latency", FIXED, 18.0, 9.5, 21.25, 30.5),
        "gateway-latency": chat("gateway-latency", FIXED, 15.75, 8.0, 20.5, 37.5),
        "seed-idle": idle("seed-idle", 31.5),
        "gateway-idle": idle("gateway-idle", 16.5),
    }
    rounds = {
        key: [chat(f"{key}#{i}", r.load, cpu, 1.0, p99, 2.0) for i, (cpu, p99) in enumerate(vals)]
        for key, r, vals in (
            ("gateway-fanout", results["gateway-fanout"], [(4.25, 130.75), (5.5, 140.0)]),
            ("gateway-latency", results["gateway-latency"], [(15.0, 27.75), (15.75, 20.5)]),
        )
    }
    for key, runs in rounds.items():
        results[key].notes.append(
            f"median of {len(runs)} interleaved runs by p99 (p99 ms: "
            + ", ".join(f"{r.p99_ms:.2f}" for r in runs)
            + "; µs CPU/delivery: "
            + ", ".join(f"{r.cpu_us_per_delivery:.2f}" for r in runs)
            + "; delivered: 100.00%, 100.00%)"
        )
    return results, rounds


def assert_png(path: Path) -> None:
    """A PNG that decodes to a picture of the size its header states, not one flat colour."""
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    assert data[12:16] == b"IHDR", path
    width, height = struct.unpack(">II", data[16:24])
    pixels = imread(path, format="png")
    assert pixels.shape[:2] == (height, width), path
    assert width >= 400, (path, width)
    assert height >= 200, (path, height)
    assert pixels.min() < pixels.max(), f"{path}: one flat colour"


def test_each_figure_of_a_result_is_a_png(tmp_path: Path) -> None:
    from loadtest.bench.plots import write_plots

    results, rounds = synthetic()
    written = write_plots(tmp_path, results, rounds, "Run 2026-01-02 03:04 UTC")
    assert {p.name for p in written} == NAMES
    assert {p.name for p in tmp_path.iterdir()} == NAMES
    for path in written:
        assert_png(path)
    before = {p.name: p.read_bytes() for p in written}
    write_plots(tmp_path, results, rounds, "Run 2026-01-02 03:04 UTC")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before, (
        "drawing the same figures again changes no byte (no timestamp in the PNGs)"
    )


def test_a_figure_the_result_lacks_leaves_no_plot_behind(tmp_path: Path) -> None:
    from loadtest.bench.plots import write_plots

    results, rounds = synthetic()
    write_plots(tmp_path, results, rounds)
    fanout_only = {k: r for k, r in results.items() if k.endswith("-fanout")}
    written = write_plots(tmp_path, fanout_only, rounds)
    assert [p.name for p in written] == ["cpu-per-delivery.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["cpu-per-delivery.png"], (
        "an earlier run's latency and idle plots would sit beside figures they are not from"
    )
    assert write_plots(tmp_path, {}, {}) == []
    assert list(tmp_path.iterdir()) == []


def bench(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.bench", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_render_from_writes_the_plots_beside_results_md(tmp_path: Path) -> None:
    results, rounds = synthetic()
    raw, md = tmp_path / "run.json", tmp_path / "RESULTS.md"
    raw.write_text(
        json.dumps(
            {
                "command": "python -m loadtest.bench --scenario all --repeat 2",
                "started_utc": "2026-01-02 03:04",
                # the machine the block's preamble names when it is rendered (this one)
                "machine": asdict(procstat.machine()),
                "meta": {"gateway_source": "commit abc1234"},
                "results": {k: asdict(v) for k, v in results.items()},
                "rounds": {k: [asdict(x) for x in v] for k, v in rounds.items()},
                "failures": {},
                "elapsed_s": 61.0,
                "busy": [0.1, 0.2],
            }
        )
    )
    md.write_text(f"# Findings\n\n{BEGIN}\nstale\n{END}\n")
    out = bench("--render-from", str(raw), "--results-md", str(md))
    plots = tmp_path / "plots"
    assert {p.name for p in plots.iterdir()} == NAMES, out
    for path in plots.iterdir():
        assert f"wrote {path}" in out
        assert_png(path)
    from_json = {p.name: p.read_bytes() for p in plots.iterdir()}

    # The figures RESULTS.md prints are the run's: read back, they draw the same pictures.
    block = read_block(md.read_text())
    assert list(block.results) == list(results)
    assert block.results["gateway-fanout"].cpu_us_per_delivery == 4.25
    assert block.results["gateway-idle"].rss_per_conn_kib == 16.5
    assert [r.p99_ms for r in block.rounds["gateway-latency"]] == [27.75, 20.5]
    for path in plots.iterdir():
        path.unlink()
    bench("--plots-from-md", "--results-md", str(md))
    assert {p.name: p.read_bytes() for p in plots.iterdir()} == from_json


def test_a_run_of_every_scenario_draws_the_plots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--scenario all`` as run, with the measuring replaced by the synthetic figures: it
    writes RESULTS.md and, beside it, the plots of those figures."""
    results, rounds = synthetic()

    async def measured(self: Bench) -> None:
        self.results, self.rounds = results, rounds

    monkeypatch.setattr(Bench, "run", measured)
    md, raw = tmp_path / "RESULTS.md", tmp_path / "all.json"
    args = ["--scenario", "all", "--no-pin", "--json", str(raw), "--results-md", str(md)]
    assert cli.main(args) == 0
    assert BEGIN in md.read_text()
    assert {p.name for p in (tmp_path / "plots").iterdir()} == NAMES
    for path in (tmp_path / "plots").iterdir():
        assert_png(path)


def test_plots_from_md_needs_a_generated_block(tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    md.write_text("# Load test results\n\nNothing measured yet.\n")
    with pytest.raises(ValueError, match="no generated block"):
        read_block(md.read_text())
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.bench", "--plots-from-md", "--results-md", str(md)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no generated block" in done.stderr
    assert not (tmp_path / "plots").exists()


def test_the_caption_read_back_keeps_a_cpu_model_with_parentheses() -> None:
    """The Intel host's model is "Intel(R) Xeon(R) Processor": cut at its first ')', the plots
    drawn from RESULTS.md got another caption than the run's own."""
    line = (
        "Run 2026-12-06 04:44 UTC, 101 s, on 2 cores (Intel(R) Xeon(R) Processor), 24 GiB RAM, "
        "Linux 6.18.44, Python 3.11.7."
    )
    match = RUN_LINE.match(line)
    assert match is not None
    assert match["cores"] == "2 cores (Intel(R) Xeon(R) Processor)"
    assert match["started"] == "2026-12-06 04:44 UTC"
