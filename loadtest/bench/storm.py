"""The storm run: N clients connect into one room (the lobby) at once, from several generator
processes (loadtest/stormgen.py), and optionally one worker of a fleet is drained after it.

Measured: seconds until every client got its ``joined`` ack, presence events and bytes per
client (until the room is quiet again), server CPU (and redis-server's) over the storm,
handshakes refused or timed out; after a drain (SIGTERM to one gunicorn worker: its clients
get ``reconnect`` + 1012 and come back after ``after_ms``) the same for the rejoin, timed
from the signal until every client is admitted again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from loadtest import procstat
from loadtest.bench.waits import wait_until
from loadtest.servers import REPO, Server


@dataclass
class Phase:
    """The storm, or the rejoin after a drain, as every generator saw it."""

    clients: int = 0
    admitted: int = 0  # clients admitted (storm) or back (rejoin) at the phase's end
    seconds: float | None = None  # until all admitted / all back; None: not all were
    last_s: float = 0.0  # until the last admission seen
    wall_s: float = 0.0  # start until the room was quiet again (CPU is measured over it)
    events_mean: float = 0.0  # presence events per client
    events_max: int = 0
    events_min: int = 0
    bytes_mean: float = 0.0  # presence bytes (JSON text) per client
    bytes_max: int = 0
    ack_bytes_mean: float = 0.0  # `joined` ack bytes per ack
    acks: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    timed_out: int = 0
    ack_timeouts: int = 0
    closed_before_ack: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    gave_up: int = 0
    drained: int = 0
    after_ms_max: int = 0
    closes: dict[str, int] = field(default_factory=dict)
    unexpected_eof: int = 0
    server_cpu_s: float = 0.0
    broker_cpu_s: float | None = None
    gen_cpu_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def failed_handshakes(self) -> int:
        return (
            self.refused + self.timed_out + self.ack_timeouts + sum(self.closed_before_ack.values())
        )

    def events_per_s(self) -> float | None:
        """Presence events per client per second of the phase (until all admitted/back)."""
        span = self.seconds if self.seconds is not None else self.last_s
        return self.events_mean / span if span else None


@dataclass
class StormResult:
    label: str
    server: str  # what ran: "one process" or "--workers 2 + Redis"
    clients: int
    generators: int
    env: dict[str, str] = field(default_factory=dict)  # the GATEWAY_PRESENCE_* settings
    storm: Phase = field(default_factory=Phase)
    rejoin: Phase | None = None
    drain_log: str = ""  # the drained worker's own account, from the server log
    rss_mib: float = 0.0
    processes: int = 0
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StormResult:
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in raw.items() if k in known}
        data["storm"] = Phase(**raw["storm"])
        data["rejoin"] = Phase(**raw["rejoin"]) if raw.get("rejoin") else None
        return cls(**data)

    def line(self) -> str:
        s = self.storm
        parts = [
            f"{self.label:<28} N={self.clients}",
            f"admitted {s.admitted}/{s.clients} in "
            + (f"{s.seconds:.1f}s" if s.seconds is not None else f"- (last {s.last_s:.1f}s)"),
            f"presence/client {s.events_mean:.1f} (max {s.events_max}) "
            f"{s.bytes_mean / 1024:.1f}KiB",
            f"ack {s.ack_bytes_mean / 1024:.1f}KiB",
            f"cpu {s.server_cpu_s:.1f}s",
            f"failed handshakes {s.failed_handshakes}",
        ]
        r = self.rejoin
        if r is not None:
            back = f"{r.seconds:.1f}s" if r.seconds is not None else "not all"
            parts.append(
                f"| drain: {r.drained} drained, back in {back}, presence/client "
                f"{r.events_mean:.1f}, failed {r.failed_handshakes}"
            )
        return " ".join(parts)


@dataclass
class StormConfig:
    clients: int
    generators: int = 4
    concurrency: int = 200  # handshakes in flight per generator
    handshake_timeout_s: float = 10.0
    deadline_s: float = 120.0  # for all admitted, and again for all back after a drain
    drain: bool = False
    drain_wait_s: float = 40.0  # for the drained worker to exit


class Generators:
    """The generator processes and their one-line-per-command conversation."""

    def __init__(self, procs: list[asyncio.subprocess.Process]) -> None:
        self.procs = procs

    @classmethod
    async def start(cls, server: Server, paths: list[str], cfg: StormConfig) -> Generators:
        count = max(1, min(cfg.generators, len(paths)))
        procs: list[asyncio.subprocess.Process] = []
        for g in range(count):
            spec = {
                "host": server.host,
                "port": server.port,
                "paths": paths[g::count],
                "concurrency": cfg.concurrency,
                "handshake_timeout_s": cfg.handshake_timeout_s,
            }
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "loadtest.stormgen",
                    json.dumps(spec),
                    cwd=REPO,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=2**20,
                )
            )
        gens = cls(procs)
        await gens.answers(30.0)  # {"ready": true} from each
        return gens

    async def ask(self, command: str, timeout_s: float) -> list[dict[str, Any]]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(command.encode() + b"\n")
            await proc.stdin.drain()
        return await self.answers(timeout_s)

    async def answers(self, timeout_s: float) -> list[dict[str, Any]]:
        async def one(proc: asyncio.subprocess.Process) -> dict[str, Any]:
            assert proc.stdout is not None
            line = await proc.stdout.readline()
            if not line:
                raise RuntimeError(f"storm generator {proc.pid} exited ({proc.returncode})")
            answer: dict[str, Any] = json.loads(line)
            return answer

        return await asyncio.wait_for(asyncio.gather(*(one(p) for p in self.procs)), timeout_s)

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None and proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.write(b"stop\n")
                    await proc.stdin.drain()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 15.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def phase_from(reports: list[dict[str, Any]], start_ns: int) -> Phase:
    """Sum the generators' reports; times are seconds from ``start_ns``."""
    p = Phase()
    p.clients = sum(r["clients"] for r in reports)
    p.admitted = sum(r["admitted"] for r in reports)
    p.gave_up = sum(r["gave_up"] for r in reports)
    last = max((r["last_ns"] for r in reports), default=0)
    p.last_s = max(0.0, (last - start_ns) / 1e9) if last else 0.0
    if p.admitted == p.clients:
        p.seconds = p.last_s
    n = max(1, p.clients)
    p.events_mean = sum(r["events_sum"] for r in reports) / n
    p.events_max = max((r["events_max"] for r in reports), default=0)
    p.events_min = min((r["events_min"] for r in reports), default=0)
    p.bytes_mean = sum(r["bytes_sum"] for r in reports) / n
    p.bytes_max = max((r["bytes_max"] for r in reports), default=0)
    p.acks = sum(r["acks"] for r in reports)
    p.ack_bytes_mean = sum(r["ack_bytes"] for r in reports) / max(1, p.acks)
    for name in ("refused", "timed_out", "ack_timeouts", "retries", "drained", "unexpected_eof"):
        setattr(p, name, sum(r[name] for r in reports))
    p.after_ms_max = max((r["after_ms_max"] for r in reports), default=0)
    p.gen_cpu_s = sum(r["gen_cpu_s"] for r in reports)
    for key in ("kinds", "closes", "closed_before_ack"):
        total: dict[str, int] = getattr(p, key)
        for r in reports:
            for k, v in r[key].items():
                total[k] = total.get(k, 0) + v
    p.errors = [e for r in reports for e in r["errors"]][:5]
    return p


class Meter:
    """Server (reaped workers included) and broker CPU between two readings."""

    def __init__(self, server: Server, broker: Server | None) -> None:
        self.server = server
        self.broker = broker
        self.s0, self.b0 = self.read()

    def read(self) -> tuple[float, float]:
        s = procstat.cpu_seconds_with_reaped(self.server.pids())
        b = self.broker.cpu_seconds() if self.broker is not None else 0.0
        return s, b

    def fill(self, phase: Phase) -> None:
        s1, b1 = self.read()
        phase.server_cpu_s = s1 - self.s0
        if self.broker is not None:
            phase.broker_cpu_s = b1 - self.b0


async def run_storm(
    server: Server, cfg: StormConfig, label: str, broker: Server | None = None
) -> StormResult:
    """One storm against ``server`` (stopped afterwards), and a drain when ``cfg.drain``."""
    result = StormResult(
        label=label,
        server=server.label,
        clients=cfg.clients,
        generators=max(1, min(cfg.generators, cfg.clients)),
        env={k: v for k, v in server.env.items() if k.startswith("GATEWAY_PRESENCE")},
    )
    run_id = os.urandom(3).hex()  # ids never collide with an earlier run's lingering presence
    paths = [server.chat_path(f"storm{run_id}-{i}") for i in range(cfg.clients)]
    gens: Generators | None = None
    try:
        gens = await Generators.start(server, paths, cfg)
        meter = Meter(server, broker)
        t0 = time.monotonic_ns()
        deadline = t0 + int(cfg.deadline_s * 1e9)
        await gens.ask(f"go {deadline}", cfg.deadline_s + 30)
        reports = await gens.ask("settle", 60.0)
        result.storm = phase_from(reports, t0)
        result.storm.wall_s = (time.monotonic_ns() - t0) / 1e9
        meter.fill(result.storm)
        result.rss_mib = server.rss_bytes() / 2**20
        result.processes = len(server.pids())
        if cfg.drain:
            result.rejoin, result.drain_log = await drain_one(server, broker, gens, cfg)
    finally:
        if gens is not None:
            await gens.stop()
        if server.popen is not None:
            server.stop()
    return result


async def drain_one(
    server: Server, broker: Server | None, gens: Generators, cfg: StormConfig
) -> tuple[Phase, str]:
    """SIGTERM one worker of the fleet; time until all its clients are admitted again."""
    workers = [pid for pid in server.pids() if pid not in server.roots]
    if not workers:
        raise RuntimeError("drain: the server has no worker processes (not a fleet?)")
    victim = workers[0]
    meter = Meter(server, broker)
    t0 = time.monotonic_ns()
    os.kill(victim, signal.SIGTERM)
    await wait_until(lambda: procstat.process_state(victim) in (None, "Z"), cfg.drain_wait_s)
    deadline = t0 + int(cfg.deadline_s * 1e9)
    await gens.ask(f"rejoin {deadline}", cfg.deadline_s + 30)
    reports = await gens.ask("settle", 60.0)
    phase = phase_from(reports, t0)
    phase.wall_s = (time.monotonic_ns() - t0) / 1e9
    meter.fill(phase)
    return phase, drain_log(server, victim)


def drain_log(server: Server, pid: int) -> str:
    """The drained worker's line ``worker PID drained N connections in S s (…)``."""
    if server.log_path is None or not server.log_path.exists():
        return ""
    text = server.log_path.read_text(errors="replace")
    found = re.search(rf"worker {pid} drained [^\n\"]*", text)
    return found.group(0) if found else ""


def as_raw(results: dict[str, StormResult]) -> dict[str, Any]:
    return {k: asdict(v) for k, v in results.items()}
