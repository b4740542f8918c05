"""What a ``message`` hook costs: added latency per message and messages/s of one worker.

Runs ``gateway serve`` (one worker, pinned to core 0) twice, without hooks and with the
``message`` hook pointed at a minimal local backend (Starlette under uvicorn, pinned to core 1,
answering ``{"allow": true}``), and measures from a client on core 1:

* latency: one connection sends a message and waits for it to come back, ``--messages`` times
  in a row; p50/p99 of that round trip, with and without the hook;
* throughput: ``--senders`` connections each keep one message in flight (send, wait for its
  echo, send again) for ``--seconds``; messages/s accepted.

    python -m loadtest.hook_cost            # about a minute
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from loadtest.servers import Server, free_port, http_status, start_gateway

SECRET = "hook-cost-secret-" + "x" * 24


def backend_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def allow(request: Request) -> Response:
        await request.body()
        return Response(b'{"allow":true}', media_type="application/json")

    return Starlette(routes=[Route("/{event}", allow, methods=["POST", "GET"])])


def start_backend() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, "-m", "loadtest.hook_cost", "--backend", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if http_status("127.0.0.1", port, "/health") in (200, 405):
                return process, port
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("hook backend did not start")


async def echo(ws: ClientConnection, text: str) -> None:
    await ws.send(json.dumps({"type": "message", "room": "lobby", "text": text}))
    for _ in range(10_000):
        frame = await ws.recv()
        for line in str(frame).split("\n"):
            if line and json.loads(line).get("text") == text:
                return
    raise RuntimeError("echo never came")


async def joined(server: Server, name: str) -> ClientConnection:
    ws = await connect(f"ws://127.0.0.1:{server.port}/ws/{name}", max_queue=None)
    for _ in range(100):
        if '"joined"' in str(await ws.recv()):
            return ws
    raise RuntimeError("no joined")


async def latency(server: Server, count: int) -> list[float]:
    ws = await joined(server, "probe")
    samples = []
    for n in range(count):
        started = time.perf_counter()
        await echo(ws, f"probe {n}")
        samples.append(time.perf_counter() - started)
    await ws.close()
    return samples


async def throughput(server: Server, senders: int, seconds: float) -> float:
    sockets = [await joined(server, f"sender-{n}") for n in range(senders)]
    sockets_room = [f"room-{n}" for n in range(senders)]
    for ws, room in zip(sockets, sockets_room, strict=True):
        await ws.send(json.dumps({"type": "join", "room": room}))
    done = 0
    deadline = time.monotonic() + seconds

    async def loop(ws: ClientConnection, room: str) -> None:
        nonlocal done
        n = 0
        while time.monotonic() < deadline:
            text = f"{room} {n}"
            await ws.send(json.dumps({"type": "message", "room": room, "text": text}))
            for _ in range(10_000):
                if any(f'"text":"{text}"' in line for line in str(await ws.recv()).split("\n")):
                    break
            n += 1
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(loop(ws, room) for ws, room in zip(sockets, sockets_room, strict=True)))
    elapsed = time.monotonic() - started
    for ws in sockets:
        await ws.close()
    return done / elapsed


def quantiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49] * 1000, cuts[98] * 1000


async def measure(env: dict[str, str], args: argparse.Namespace) -> tuple[float, float, float]:
    server = start_gateway(core="0", env=env, label="gateway")
    try:
        p50, p99 = quantiles(await latency(server, args.messages))
        rate = await throughput(server, args.senders, args.seconds)
    finally:
        server.stop()
    return p50, p99, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--backend", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend:
        import uvicorn

        uvicorn.run(backend_app(), host="127.0.0.1", port=args.backend, log_level="warning")
        return
    os.sched_setaffinity(0, {1})
    common = {"GATEWAY_RATE_LIMIT": "0", "GATEWAY_COMMAND_RATE_LIMIT": "0"}
    backend, port = start_backend()
    try:
        hooks = {
            **common,
            "GATEWAY_HOOK_URL": f"http://127.0.0.1:{port}",
            "GATEWAY_HOOK_SECRET": SECRET,
            "GATEWAY_HOOK_EVENTS": "message",
        }
        results = {
            "no hooks": asyncio.run(measure(common, args)),
            "message hook": asyncio.run(measure(hooks, args)),
        }
    finally:
        backend.kill()
        backend.wait(5)
    print(f"| run | round trip p50 | p99 | messages/s ({args.senders} senders) |")
    print("|---|---|---|---|")
    for name, (p50, p99, rate) in results.items():
        print(f"| {name} | {p50:.2f} ms | {p99:.2f} ms | {rate:,.0f} |")


if __name__ == "__main__":
    main()
