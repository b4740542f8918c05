"""Scenarios: which servers each one starts, which runs it makes, and in what order.

Comparisons run interleaved (``--repeat`` rounds, the median reported) so a change in the
machine's background load hits both sides of a ratio alike.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

from loadtest.bench.chat import run_chat
from loadtest.bench.idle import deflate_offer_accepted, move_to_own_room, run_idle
from loadtest.bench.model import Load, Options, Result, median_run, preset_load
from loadtest.bench.storm import StormConfig, StormResult, run_storm
from loadtest.bun import pinned_version
from loadtest.servers import Server, attach, start_bun, start_gateway, start_redis, start_seed
from loadtest.wsgen import WSClient

SEED_CONNECT_CONCURRENCY = 25
"""Handshakes in flight against the seed (not measured: its joins are O(N²) whatever the pace)."""


class Bench:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.results: dict[str, Result] = {}
        self.meta: dict[str, Any] = {}
        self.failures: dict[str, str] = {}
        self.rounds: dict[str, list[Result]] = {}
        self.storms: dict[str, StormResult] = {}

    def gw_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(self.opts.gateway_env)
        if self.opts.send_queue is not None:
            env["GATEWAY_SEND_QUEUE"] = str(self.opts.send_queue)
        env.update(extra or {})
        return env

    def server(
        self, target: str, label: str, workers: int = 1, redis: bool | None = None, **env: str
    ) -> Server:
        if self.opts.attach_url is not None:
            return attach(self.opts.attach_url, wire=self.opts.wire, label=label)
        if target in ("seed", "bun"):
            start = start_seed if target == "seed" else start_bun
            ref = start(self.opts.server_core, label=label)
            self.meta.setdefault("servers", {})[label.split("#")[0]] = ref.command
            if target == "bun":
                self.meta["bun_version"] = pinned_version()
            return ref
        extra = dict(env)
        command = self.opts.variants.get(target, self.opts.gateway_command)
        if redis or (redis is None and workers > 1):
            # A key prefix of its own: nothing shared with other users of the same Redis db.
            sep = "&" if "?" in self.opts.redis_url else "?"
            prefix = f"bench{os.urandom(4).hex()}"
            extra.setdefault("GATEWAY_BROKER_URL", f"{self.opts.redis_url}{sep}prefix={prefix}")
        server = start_gateway(
            self.opts.server_core,
            workers,
            self.gw_env(extra),
            label=label,
            command=command,
        )
        server.wire = self.opts.wire
        base_label = label.split("#")[0]
        self.meta.setdefault("servers", {})[base_label] = server.command
        self.meta.setdefault("env", {})[base_label] = {
            k: v for k, v in server.env.items() if k.startswith("GATEWAY_")
        }
        return server

    def record(self, key: str, result: Result) -> Result:
        self.results[key] = result
        print(result.line(), flush=True)
        for note in result.notes:
            print(f"    note: {note}", flush=True)
        return result

    def targets(self) -> list[str]:
        return ["attached"] if self.opts.attach_url else self.opts.targets

    async def repeated(
        self, runs: list[tuple[str, Callable[[str], Awaitable[Result]]]], by: str, rounds: int
    ) -> None:
        """Run every (label, run) in turn, ``rounds`` times interleaved, so a change in the
        machine's background load hits both sides of a ratio alike; record each median."""
        rounds = max(1, rounds)
        got: dict[str, list[Result]] = {label: [] for label, _ in runs}
        for round_ in range(1, rounds + 1):
            for label, run in runs:
                result = await run(label + (f"#{round_}" if rounds > 1 else ""))
                got[label].append(result)
                if rounds > 1:
                    print(f"  {result.line()}", flush=True)
        for label, results in got.items():
            self.rounds[label] = results
            self.record(label, results[0] if rounds == 1 else median_run(results, by))

    def chat_run(
        self,
        target: str,
        load: Load,
        workers: int = 1,
        broker: Server | None = None,
        private_redis: bool = False,
    ) -> Callable[[str], Awaitable[Result]]:
        """One chat run; with ``private_redis`` through a redis-server of its own, started for
        the run on the servers' core (its CPU is the run's ``broker_cpu_s``)."""
        if target == "seed":
            # Each seed handshake waits for the joins broadcast before it to everyone: with 200
            # in flight on a busy host, the last ones outlast the generator's 10 s timeout.
            fewer = min(load.connect_concurrency, SEED_CONNECT_CONCURRENCY)
            load = Load(**{**asdict(load), "connect_concurrency": fewer})

        async def run(label: str) -> Result:
            if not private_redis:
                server = self.server(target, label, workers=workers, redis=broker is not None)
                return await run_chat(server, load, label, broker=broker)
            redis = start_redis(self.opts.server_core, label=f"{label}-redis")
            try:
                self.meta.setdefault("servers", {})["redis"] = redis.command
                server = self.server(target, label, workers, True, GATEWAY_BROKER_URL=redis.url)
                return await run_chat(server, load, label, broker=redis)
            finally:
                redis.stop()

        return run

    async def fanout(self, load: Load, name: str = "fanout") -> None:
        by = "cpu" if load.rate is None else "p99"
        runs = [(f"{t}-{name}", self.chat_run(t, load)) for t in self.targets()]
        await self.repeated(runs, by, self.opts.repeat)

    async def stalled(self, load: Load) -> None:
        """Control and stalled runs, interleaved; the gateway ``--repeat`` times (median p99)."""
        control = Load(**{**asdict(load), "stalled": 0})
        stalled = Load(**{**asdict(load), "stalled": load.stalled or 1})
        for target in self.targets():
            runs = [
                (f"{target}-control", self.chat_run(target, control)),
                (f"{target}-stalled", self.chat_run(target, stalled)),
            ]
            rounds = 1 if target == "seed" else self.opts.repeat
            await self.repeated(runs, "p99", rounds)

    async def idle(self) -> None:
        count = self.opts.idle_connections
        for target in self.targets():
            label = f"{target}-idle"
            on_open: Callable[[int, WSClient], None] | None = None
            if target in ("seed", "bun"):
                server = self.server(target, label)
                path = "/ws"  # the seed's /ws/{id} broadcasts every join to everyone: O(N²)
            else:
                # Heartbeats at their defaults: idle connections are pinged as in production.
                server = self.server(
                    target,
                    label,
                    GATEWAY_HEARTBEAT_INTERVAL="20",
                    GATEWAY_HEARTBEAT_TIMEOUT="20",
                )
                path = "/ws/idle-{i}"
                if self.opts.idle_room_each:
                    on_open = move_to_own_room
            result = await run_idle(server, count, label, path, self.opts.idle_seconds, on_open)
            self.record(label, result)

    def redis_run(self, load: Load, workers: int) -> Callable[[str], Awaitable[Result]]:
        """The gateway through Redis: a private redis-server per run unless --redis-url."""
        if self.opts.private_redis:
            return self.chat_run("gateway", load, workers=workers, private_redis=True)
        redis_port = urlsplit(self.opts.redis_url).port or 6379
        broker = attach(f"http://127.0.0.1:{redis_port}", label="redis")
        return self.chat_run("gateway", load, workers=workers, broker=broker)

    async def workers(self, load: Load) -> None:
        """``--workers N`` + Redis against one worker, interleaved (median CPU per delivery)."""
        runs = [
            ("gateway-single", self.chat_run("gateway", load)),
            (f"gateway-workers{self.opts.workers}", self.redis_run(load, self.opts.workers)),
        ]
        if self.opts.workers > 1:
            # One worker through Redis separates the broker's cost from the workers' sharing.
            runs.append(("gateway-workers1", self.redis_run(load, 1)))
        await self.repeated(runs, "cpu", self.opts.repeat)

    async def storm(self) -> None:
        """Each size: one process, the batch=0 baseline (smallest size only), then the fleet
        with a drain of one worker. A run that fails is recorded and the next one runs."""
        o = self.opts
        sizes = sorted(o.storm_sizes)
        redis_port = urlsplit(o.redis_url).port or 6379
        for n in sizes:
            runs: list[tuple[str, int, dict[str, str]]] = []
            if "single" in o.storm_runs:
                runs.append((f"gateway-storm-{n}", 1, {}))
            if "baseline" in o.storm_runs and n == sizes[0]:
                runs.append((f"gateway-storm-{n}-batch0", 1, {"GATEWAY_PRESENCE_BATCH_MS": "0"}))
            if "fleet" in o.storm_runs and o.attach_url is None:
                # The production drain timeout: the bench's 2 s would cut a drain of thousands.
                runs.append(
                    (f"fleet{o.workers}-storm-{n}", o.workers, {"GATEWAY_DRAIN_TIMEOUT": "25"})
                )
            for label, workers, env in runs:
                cfg = StormConfig(
                    clients=n,
                    generators=o.storm_generators,
                    concurrency=o.load.connect_concurrency,
                    handshake_timeout_s=o.handshake_timeout,
                    deadline_s=o.storm_deadline,
                    drain=workers > 1,
                )
                try:
                    broker = None
                    if workers > 1:
                        broker = attach(f"http://127.0.0.1:{redis_port}", label="redis")
                    server = self.server("gateway", label, workers, workers > 1, **env)
                    result = await run_storm(server, cfg, label, broker=broker)
                except Exception as exc:  # one failed storm must not hide the others
                    self.failures[label] = f"{type(exc).__name__}: {exc}"[:400]
                    print(f"storm {label} failed: {self.failures[label]}", flush=True)
                    continue
                self.storms[label] = result
                print(result.line(), flush=True)

    async def uncorked(self, base: Load) -> None:
        """The gateway without write corking (loadtest/experiments/uncorked.py), same loads."""
        cmd = [sys.executable, "-m", "loadtest.experiments.uncorked"]

        def variant(load: Load) -> Callable[[str], Awaitable[Result]]:
            async def run(label: str) -> Result:
                server = start_gateway(
                    self.opts.server_core, 1, self.gw_env(), label=label, command=cmd
                )
                self.meta.setdefault("servers", {})[label.split("#")[0]] = server.command
                return await run_chat(server, load, label)

            return run

        fanout = Load(**{**asdict(base), "rate": None})
        await self.repeated([("uncorked-fanout", variant(fanout))], "cpu", self.opts.repeat)
        latency = preset_load("latency", base)
        await self.repeated([("uncorked-latency", variant(latency))], "p99", self.opts.repeat)

    async def fastapi_route(self) -> None:
        """Chat WebSockets through FastAPI's router (loadtest/experiments/fastapi_route.py)."""
        cmd = [sys.executable, "-m", "loadtest.experiments.fastapi_route"]
        label = "fastapiroute-idle"
        env = self.gw_env({"GATEWAY_HEARTBEAT_INTERVAL": "20", "GATEWAY_HEARTBEAT_TIMEOUT": "20"})
        server = start_gateway(self.opts.server_core, 1, env, label=label, command=cmd)
        self.meta.setdefault("servers", {})[label] = server.command
        on_open = move_to_own_room if self.opts.idle_room_each else None
        result = await run_idle(
            server, self.opts.idle_connections, label, "/ws/idle-{i}", 3.0, on_open
        )
        self.record(label, result)

    async def deflate(self) -> None:
        if "gateway" not in self.targets():
            return
        server = self.server("gateway", "gateway-deflate-probe")
        try:
            self.meta["deflate_accepted_when_offered"] = await deflate_offer_accepted(server)
        finally:
            server.stop()

    async def run(self) -> None:
        o = self.opts
        load = o.load
        if o.scenario == "fanout":
            await self.fanout(load)
        elif o.scenario == "latency":
            await self.fanout(load, "latency")
        elif o.scenario == "stalled":
            await self.stalled(load)
        elif o.scenario == "idle":
            await self.idle()
        elif o.scenario == "workers":
            await self.workers(load)
        elif o.scenario == "storm":
            await self.storm()
        elif o.scenario == "all":
            await self.all()

    async def all(self) -> None:
        # Every target at its preset; --subscribers/--publishers/... shape fanout and latency.
        base = self.opts.load
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("fanout", lambda: self.fanout(Load(**{**asdict(base), "rate": None}), "fanout")),
            ("latency", lambda: self.fanout(preset_load("latency", base), "latency")),
            ("stalled", lambda: self.stalled(preset_load("stalled", base, stalled=1))),
            ("idle", self.idle),
            ("workers", lambda: self.workers(Load(**{**asdict(base), "rate": None}))),
            ("deflate", self.deflate),
        ]
        if self.opts.experiments:
            steps.append(("uncorked", lambda: self.uncorked(base)))
            steps.append(("fastapi_route", self.fastapi_route))
        for name, step in steps:
            try:
                await step()
            except Exception as exc:  # one broken scenario must not hide the others
                lines = [line for line in str(exc).splitlines() if line.strip()]
                why = lines[0] + (f" … {lines[-1].strip()}" if len(lines) > 1 else "")
                self.failures[name] = f"{type(exc).__name__}: {why}"[:400]
                print(f"scenario {name} failed: {self.failures[name]}", flush=True)
