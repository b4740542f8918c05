"""One generator process of the storm scenario (``python -m loadtest.stormgen SPEC_JSON``).

The bench (loadtest/bench/storm.py) starts several of these, each with its share of the
clients, and steers them with one command per stdin line; each answers with one JSON line on
stdout. Every client of a storm joins the lobby by connecting (``/ws/{id}``); it is *admitted*
when its ``joined`` acknowledgement arrives.

Commands, in order:

* (on start) → ``{"ready": true}`` once the event loop runs;
* ``go DEADLINE_NS`` — every client connects at once (at most ``concurrency`` handshakes in
  flight) → ``{"admitted": …}`` when all are admitted or ``DEADLINE_NS`` (CLOCK_MONOTONIC,
  shared by every process on the machine) passed;
* ``settle`` — wait until no presence event arrived for ``quiet_s`` → the phase's report;
  counters start again from zero for the next phase;
* ``rejoin DEADLINE_NS`` — after a drain: wait until every client is admitted again on a live
  connection (clients closed with 1012 reconnect after the ``after_ms`` of their ``reconnect``
  hint), then settle → the phase's report;
* ``stop`` — abort every connection and exit.

What is counted per client: presence events (one per JSON object of ``"type":"presence"``; a
frame may carry several newline-separated objects), their bytes (the JSON text, without
WebSocket framing), and the ``joined`` acknowledgement's bytes; per process: handshakes
refused (connection refused or reset, or an HTTP answer other than 101), handshakes timed out,
acknowledgements that never came, closes by code, drains honoured.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loadtest import procstat
from loadtest.wsgen import HandshakeError, Stats, WSClient

PRESENCE = b'{"type":"presence"'
JOINED = b'{"type":"joined"'
RECONNECT = b'{"type":"reconnect"'
EVENT = b'"event":"'
AFTER = b'"after_ms":'


@dataclass
class Spec:
    host: str
    port: int
    paths: list[str]
    concurrency: int = 200
    handshake_timeout_s: float = 10.0
    attempts: int = 5  # connection attempts per client and phase before it gives up
    quiet_s: float = 1.0  # no presence event for this long: the phase has settled
    settle_deadline_s: float = 30.0


@dataclass
class Member:
    """One simulated user: its id stays the same across reconnections."""

    path: str
    admitted_ns: int = 0  # when its current connection's `joined` ack arrived (0: not yet)
    events: int = 0
    bytes: int = 0
    after_ms: int | None = None  # from the last `reconnect` hint
    client: WSClient | None = None
    acked: asyncio.Future[None] | None = None
    busy: bool = False  # connecting, or waiting out a reconnect delay
    gave_up: bool = False


@dataclass
class Counters:
    refused: int = 0
    timed_out: int = 0
    ack_timeouts: int = 0
    retries: int = 0
    drained: int = 0  # closes with 1012 that were followed by a reconnect
    after_ms_max: int = 0
    ack_bytes: int = 0
    acks: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    closes: dict[str, int] = field(default_factory=dict)
    closed_before_ack: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class Generator:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.stats = Stats()
        self.members = [Member(p) for p in spec.paths]
        self.c = Counters()
        self.total_events = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = False
        self.cpu0 = procstat.self_cpu_seconds()
        self.deadline_ns = 0

    # -- frames -----------------------------------------------------------------------------
    def on_text(self, member: Member, client: WSClient, payload: bytes) -> None:
        if client is not member.client:
            return  # a previous connection's late frame
        parts = payload.split(b"\n") if b"\n" in payload else [payload]
        for part in parts:
            if part.startswith(PRESENCE):
                member.events += 1
                member.bytes += len(part)
                self.total_events += 1
                i = part.find(EVENT)
                kind = part[i + 9 : part.find(b'"', i + 9)].decode() if i >= 0 else "?"
                self.c.kinds[kind] = self.c.kinds.get(kind, 0) + 1
            elif part.startswith(JOINED):
                if b'"room":"lobby"' in part and member.acked is not None:
                    self.c.ack_bytes += len(part)
                    self.c.acks += 1
                    if not member.acked.done():
                        member.acked.set_result(None)
            elif part.startswith(RECONNECT):
                i = part.find(AFTER)
                if i >= 0:
                    digits = part[i + len(AFTER) :].split(b"}")[0].split(b",")[0]
                    member.after_ms = int(digits.strip())
            elif b'"type":"error"' in part and len(self.c.errors) < 5:
                self.c.errors.append(part[:200].decode("utf-8", "replace"))

    # -- one client's life --------------------------------------------------------------------
    async def open(self, member: Member, sem: asyncio.Semaphore) -> bool:
        """One connection attempt up to its ``joined`` ack; False when it failed (counted)."""
        loop = asyncio.get_running_loop()
        spec = self.spec
        member.acked = loop.create_future()
        holder: list[WSClient] = []

        def factory() -> WSClient:
            client = WSClient(
                self.stats,
                spec.host,
                spec.port,
                member.path,
                on_text=lambda c, p: self.on_text(member, c, p),
            )
            member.client = client
            holder.append(client)
            return client

        async with sem:
            try:
                await asyncio.wait_for(
                    loop.create_connection(factory, spec.host, spec.port),
                    spec.handshake_timeout_s,
                )
                await asyncio.wait_for(holder[0].ready, spec.handshake_timeout_s)
            except HandshakeError as exc:  # an answer other than 101, or closed before it
                self.c.refused += 1
                self.note(f"{member.path}: {exc}")
                self.drop(holder)
                return False
            except TimeoutError:
                self.c.timed_out += 1
                self.drop(holder)
                return False
            except OSError as exc:  # refused or reset at the TCP level
                self.c.refused += 1
                self.note(f"{member.path}: {exc!r}")
                self.drop(holder)
                return False
        client = holder[0]
        await asyncio.wait(
            (member.acked, client.closed),
            timeout=spec.handshake_timeout_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if not member.acked.done():
            if client.closed.done():  # closed after the upgrade, before its `joined` ack
                code = str(client.closed.result())
                self.c.closed_before_ack[code] = self.c.closed_before_ack.get(code, 0) + 1
            else:
                self.c.ack_timeouts += 1
            self.drop(holder)
            return False
        member.admitted_ns = time.monotonic_ns()
        return True

    def drop(self, holder: list[WSClient]) -> None:
        for client in holder:
            client.abort()

    def note(self, text: str) -> None:
        if len(self.c.errors) < 5:
            self.c.errors.append(text[:200])

    async def life(self, member: Member, sem: asyncio.Semaphore) -> None:
        """Connect; on a drain (1012) come back after ``after_ms``; on any other close too,
        after a short backoff. Bounded: ``attempts`` failed attempts in a row end it."""
        failures = 0
        while not self.stopping:
            member.busy = True
            ok = await self.open(member, sem)
            if not ok:
                failures += 1
                if failures >= self.spec.attempts or time.monotonic_ns() > self.deadline_ns:
                    member.busy = False
                    member.gave_up = True
                    return
                self.c.retries += 1
                await asyncio.sleep(0.1 * 2**failures * random.uniform(0.5, 1.0))
                continue
            failures = 0
            member.busy = False
            client = member.client
            assert client is not None
            code = await client.closed
            if self.stopping:
                return
            member.busy = True
            member.admitted_ns = 0
            self.c.closes[str(code)] = self.c.closes.get(str(code), 0) + 1
            if code == 1012:
                self.c.drained += 1
                delay = member.after_ms or 0
                self.c.after_ms_max = max(self.c.after_ms_max, delay)
                member.after_ms = None
                await asyncio.sleep(delay / 1000)  # the server's instruction, not a sync wait
            else:
                await asyncio.sleep(random.uniform(0.1, 0.5))

    # -- phases -------------------------------------------------------------------------------
    def all_admitted(self) -> bool:
        return all(m.admitted_ns or m.gave_up for m in self.members)

    def all_back(self) -> bool:
        return all(m.gave_up or (m.admitted_ns and not m.busy) for m in self.members)

    async def go(self, deadline_ns: int) -> dict[str, Any]:
        self.deadline_ns = deadline_ns
        sem = asyncio.Semaphore(self.spec.concurrency)
        self.tasks = [asyncio.create_task(self.life(m, sem)) for m in self.members]
        await poll(self.all_admitted, deadline_ns)
        return {"admitted": self.admitted(), **self.times()}

    async def rejoin(self, deadline_ns: int) -> None:
        self.deadline_ns = deadline_ns
        # The drained worker is gone, so every close is on its way to this process; "everyone
        # back" must hold for 0.2 s, not for a moment before the last 1012 was read.
        await poll(self.all_back, deadline_ns, hold_ns=200_000_000)

    async def settle(self) -> dict[str, Any]:
        end = time.monotonic_ns() + int(self.spec.settle_deadline_s * 1e9)
        quiet_ns = int(self.spec.quiet_s * 1e9)
        last, since = self.total_events, time.monotonic_ns()
        while time.monotonic_ns() < end:
            await asyncio.sleep(0.05)
            if self.total_events != last:
                last, since = self.total_events, time.monotonic_ns()
            elif time.monotonic_ns() - since >= quiet_ns:
                break
        report = self.report()
        self.reset()
        return report

    def admitted(self) -> int:
        return sum(1 for m in self.members if m.admitted_ns)

    def times(self) -> dict[str, Any]:
        stamps = [m.admitted_ns for m in self.members if m.admitted_ns]
        return {"first_ns": min(stamps, default=0), "last_ns": max(stamps, default=0)}

    def report(self) -> dict[str, Any]:
        events = [m.events for m in self.members]
        sizes = [m.bytes for m in self.members]
        cpu = procstat.self_cpu_seconds()
        c = self.c
        return {
            "clients": len(self.members),
            "admitted": self.admitted(),
            "gave_up": sum(1 for m in self.members if m.gave_up),
            **self.times(),
            "events_sum": sum(events),
            "events_max": max(events, default=0),
            "events_min": min(events, default=0),
            "bytes_sum": sum(sizes),
            "bytes_max": max(sizes, default=0),
            "ack_bytes": c.ack_bytes,
            "acks": c.acks,
            "kinds": c.kinds,
            "refused": c.refused,
            "timed_out": c.timed_out,
            "ack_timeouts": c.ack_timeouts,
            "retries": c.retries,
            "drained": c.drained,
            "after_ms_max": c.after_ms_max,
            "closes": c.closes,
            "closed_before_ack": c.closed_before_ack,
            "unexpected_eof": self.stats.unexpected_eof,
            "errors": c.errors,
            "gen_cpu_s": cpu - self.cpu0,
        }

    def reset(self) -> None:
        for m in self.members:
            m.events = 0
            m.bytes = 0
        self.c = Counters()
        self.stats.unexpected_eof = 0
        self.cpu0 = procstat.self_cpu_seconds()

    def stop(self) -> None:
        self.stopping = True
        for m in self.members:
            if m.client is not None:
                m.client.abort()
        for task in self.tasks:
            task.cancel()


async def poll(pred: Callable[[], bool], deadline_ns: int, hold_ns: int = 0) -> bool:
    """Wait until ``pred()`` is true (and stays true for ``hold_ns``), or the deadline."""
    since: int | None = None
    while time.monotonic_ns() < deadline_ns:
        if not pred():
            since = None
        elif since is None:
            since = time.monotonic_ns()
        if since is not None and time.monotonic_ns() - since >= hold_ns:
            return True
        await asyncio.sleep(0.02)
    return pred()


def say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def serve(spec: Spec) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    gen = Generator(spec)
    say({"ready": True, "pid": os.getpid()})
    try:
        for _ in range(10):  # go, settle, rejoin, settle, stop: a bounded conversation
            line = (await reader.readline()).decode().split()
            if not line or line[0] == "stop":
                break
            if line[0] == "go":
                say(await gen.go(int(line[1])))
            elif line[0] == "settle":
                say(await gen.settle())
            elif line[0] == "rejoin":
                await gen.rejoin(int(line[1]))
                say({"back": sum(1 for m in gen.members if m.admitted_ns), **gen.times()})
    finally:
        gen.stop()


def main(argv: list[str]) -> int:
    raw = json.loads(argv[0])
    spec = Spec(**raw)
    if spec.host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("storm generators target loopback only")
    procstat.raise_nofile(max(1024, len(spec.paths) + 256))
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(serve(spec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
