"""RESULTS.md's generated block read back into Results: what ``--plots-from-md`` draws when the
run's raw JSON is not at hand (``loadtest/results/`` is git-ignored, so a clone has only the
block).

It reads the figures the block prints — the "Every run" table and each run's rounds from its
"median of N interleaved runs" note — rounded as printed there (two decimals); nothing else of
a Result is restored. A run's raw JSON (``--render-from``) restores everything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from loadtest.bench.model import Result
from loadtest.bench.report import BEGIN, END

RUN_LINE = re.compile(
    r"^Run (?P<started>.+? UTC)(?:, [\d.]+ s)?, on (?P<cores>\d+ cores \(.*?\))(?:, \d+ GiB|$)"
)
"""The preamble's first line; a CPU model may hold parentheses ("Intel(R) Xeon(R) Processor")."""
ROUNDS_NOTE = re.compile(
    r"^- (?P<key>\S+): median of \d+ interleaved runs .*?\(p99 ms: (?P<p99>[^;]*); "
    r"µs CPU/delivery: (?P<cpu>[^;]*);"
)


@dataclass
class Block:
    caption: str = ""  # when and where it ran, for the plots
    results: dict[str, Result] = field(default_factory=dict)
    rounds: dict[str, list[Result]] = field(default_factory=dict)


def number(cell: str) -> float | None:
    """A figure as the report prints it: ``58,286``, ``16.94``, ``100.00%``; ``n/a``/``-``: None."""
    text = cell.strip().rstrip("%").replace(",", "")
    if text in ("", "-", "n/a"):
        return None
    return float(text)


def generated_block(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise ValueError("no generated block (bench:begin … bench:end) in this file")
    return text[text.index(BEGIN) + len(BEGIN) : text.index(END)]


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def runs_table(lines: list[str]) -> dict[str, Result]:
    """The "Every run" table: one Result per row, keyed by the run's name."""
    start = next(i for i, line in enumerate(lines) if line.startswith("| run | load |"))
    header = cells(lines[start])
    results: dict[str, Result] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        row = dict(zip(header, cells(line), strict=True))
        key, load = row["run"], row["load"]
        results[key] = Result(
            label=key,
            server=key.split("-")[0],
            scenario="idle" if load.endswith(" idle") else "chat",
            load=load,
            connections=int(number(row["conns"]) or 0),
            deliveries_per_s=number(row["deliveries/s"]) or 0.0,
            p50_ms=number(row["p50 ms"]),
            p99_ms=number(row["p99 ms"]),
            max_ms=number(row["max ms"]),
            cpu_us_per_delivery=number(row["µs CPU/delivery"]),
            rss_per_conn_kib=number(row["RSS/conn KiB"]),
        )
    return results


def rounds_notes(lines: list[str], results: dict[str, Result]) -> dict[str, list[Result]]:
    """Each round's p99 and CPU per delivery, from the notes of the runs that had rounds."""
    rounds: dict[str, list[Result]] = {}
    for line in lines:
        m = ROUNDS_NOTE.match(line)
        if not m or m["key"] not in results:
            continue
        base = results[m["key"]]
        p99s = [number(v) for v in m["p99"].split(",")]
        cpus = [number(v) for v in m["cpu"].split(",")]
        rounds[m["key"]] = [
            Result(
                label=f"{base.label}#{i}",
                server=base.server,
                scenario=base.scenario,
                load=base.load,
                p99_ms=p99,
                cpu_us_per_delivery=cpu,
            )
            for i, (p99, cpu) in enumerate(zip(p99s, cpus, strict=True), start=1)
        ]
    return rounds


def read_block(text: str) -> Block:
    """The figures of RESULTS.md's generated block (``text`` is the whole file)."""
    lines = generated_block(text).splitlines()
    caption = ""
    for line in lines:
        m = RUN_LINE.match(line)
        if m:
            caption = f"Run {m['started']} on {m['cores']}"
            break
    results = runs_table(lines)
    return Block(caption, results, rounds_notes(lines, results))
