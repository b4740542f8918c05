"""Thousands of hostile frames at a live server while a well-behaved client chats through them.

Fuzzing WebSocket clients send random text, binary frames, malformed and hostile JSON (unknown
types, wrong field types, huge numbers, deep nesting, lone surrogate escapes) and the odd
oversized frame; raw sockets send what no client library will: invalid UTF-8, unmasked frames,
reserved opcodes and bits, oversized control frames, garbage before and after the handshake.

It passes when every answer is a spec'd error or close code, every fuzzer still answers a ping
after its burst, the server counted no server error, and the calm client received each of its
messages, in order. The seed is random per run and printed on failure
(``GATEWAY_FUZZ_SEED`` replays one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.security.helpers import CLOSED, REJECTED, wait_metric
from tests.support.clients import of_type, open_ws, recv_until
from tests.support.metrics import metric
from tests.support.rawws import first_close_code, masked_frame, open_raw
from tests.support.servers import GatewayProcess, scaled, start_gateway

SEED = int(os.environ.get("GATEWAY_FUZZ_SEED") or random.randrange(2**32))
FUZZERS = 8
FRAMES_PER_FUZZER = 500
CALM_MESSAGES = 300
MAX_FRAME = 4096
SPEC_ERRORS = {"rate_limited", "too_large", "invalid", "forbidden", "unknown_room"}
SPEC_CLOSES = {1002, 1007, 1009}
"""Closes a hostile client may earn: protocol error, invalid UTF-8, frame too large."""


@pytest.fixture(scope="module")
def server() -> Iterator[GatewayProcess]:
    env = {
        "GATEWAY_MAX_FRAME_BYTES": str(MAX_FRAME),
        "GATEWAY_MAX_MESSAGE_BYTES": "200",
        "GATEWAY_RATE_LIMIT": "0",
        "GATEWAY_COMMAND_RATE_LIMIT": "0",  # fuzzers send hundreds of joins and pings each
    }
    with start_gateway(env) as gateway:
        yield gateway


# What fuzzers send


def random_text(rng: random.Random, size: int) -> str:
    alphabets = [
        "abc xyz",
        '{}[]":,\\/ \n\t0123456789-.eE',
        "".join(map(chr, range(32, 127))),
        "é漢字🙂\u202e\u200b\x00\x7f\ufeff",
    ]
    alphabet = rng.choice(alphabets)
    return "".join(rng.choice(alphabet) for _ in range(size))


def hostile_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(10 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**63, 2**64, -(2**63), 10**300, rng.randrange(-(10**6), 10**6)])
    if kind == 3:
        return rng.choice([0.5, -0.0, 1e308, float("inf"), float("nan")])
    if kind in (4, 5):
        return random_text(rng, rng.randrange(0, 40))
    if kind in (6, 7):
        return [hostile_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {random_text(rng, 3): hostile_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def json_command(rng: random.Random) -> str:
    kind = rng.choice(["message", "direct", "join", "leave", "resume", "ping", "shout", "", None])
    data: dict[str, Any] = {"type": kind}
    for name in ("room", "text", "to", "after"):
        if rng.random() < 0.6:
            data[name] = hostile_value(rng)
    if rng.random() < 0.5:
        data["room"] = rng.choice(["lobby", "fuzz", "r" * 65, "café", "a b"])
    if kind == "message" and rng.random() < 0.5:
        data["text"] = random_text(rng, rng.randrange(1, 250))
    return json.dumps(data, allow_nan=True)


def hostile_frame(rng: random.Random) -> str | bytes:
    roll = rng.random()
    if roll < 0.30:
        return json_command(rng)
    if roll < 0.45:
        valid = json_command(rng)
        cut = rng.randrange(len(valid) + 1)
        return valid[:cut] + random_text(rng, rng.randrange(3)) + valid[cut + 1 :]
    if roll < 0.60:
        return random_text(rng, rng.randrange(0, 300))
    if roll < 0.68:
        return rng.randbytes(rng.randrange(0, 200))
    if roll < 0.74:
        return rng.choice(["[", '{"a":']) * rng.randrange(100, 1300) + "1"
    if roll < 0.80:
        digits = "9" * rng.randrange(300, 4000)
        return rng.choice(
            [
                f'{{"type":"resume","room":"lobby","after":{digits}}}',
                f'{{"type":"message","text":{digits}}}',
                f'{{"type":"ping","n":{digits}e99999}}',
            ]
        )
    if roll < 0.86:
        escape = f"\\u{rng.randrange(0xD800, 0xE000):04x}"
        return rng.choice(
            [
                f'{{"type":"message","text":"x{escape}y"}}',
                f'{{"type":"direct","to":"{escape}","text":"hi"}}',
                f'{{"type":"join","room":"{escape}"}}',
            ]
        )
    if roll < 0.92:
        return rng.choice(["/join ", "/leave ", "/msg ", "/"]) + random_text(rng, rng.randrange(20))
    if roll < 0.995:
        return json.dumps({"type": "message", "room": "lobby", "text": random_text(rng, 50)})
    return "z" * (MAX_FRAME + 1 + rng.randrange(1000))


# The clients


@dataclass
class Tally:
    frames: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    closes: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


async def drain(ws: ClientConnection, tally: Tally, alive: str, answered: asyncio.Event) -> None:
    """Read everything a fuzzer is sent (a silent reader would be a slow consumer)."""
    with contextlib.suppress(ConnectionClosed):
        async for frame in ws:
            if isinstance(frame, bytes):
                tally.problems.append(f"binary frame from the server: {frame[:40]!r}")
                continue
            for line in frame.split("\n"):
                if alive in line:
                    answered.set()
                elif line.startswith('{"type":"error"'):
                    code = json.loads(line)["code"]
                    tally.errors[code] += 1
                    if code not in SPEC_ERRORS:
                        tally.problems.append(f"unspecified error code {line}")


async def fuzzer(server: GatewayProcess, index: int, rng: random.Random, tally: Tally) -> None:
    """Sends its share of hostile frames, reconnecting after each earned close; after the
    burst, a liveness probe (ping, or a direct message to itself in the text format)."""
    name = f"fuzz-{index}-{uuid.uuid4().hex[:6]}"
    text_format = index % 4 == 0
    path = f"/ws/{name}?format=text" if text_format else f"/ws/{name}"
    sent = 0
    while sent < FRAMES_PER_FUZZER:
        marker = f"alive-{uuid.uuid4().hex}"
        probe, alive = (
            (f"/msg {name} {marker}", f"{name} (direct): {marker}")
            if text_format
            else (json.dumps({"type": "direct", "to": name, "text": marker}), f'"{marker}"')
        )
        ws = await open_ws(server.ws_url(path), max_size=None)
        answered = asyncio.Event()
        reader = asyncio.create_task(drain(ws, tally, alive, answered))
        oversized = False
        with contextlib.suppress(ConnectionClosed):
            while sent < FRAMES_PER_FUZZER and not oversized:
                frame = hostile_frame(rng)
                sent += 1
                tally.frames += 1
                await ws.send(frame)
                oversized = isinstance(frame, str) and len(frame.encode()) > MAX_FRAME
            if not oversized:
                await ws.send(probe)
                async with asyncio.timeout(scaled(15)):
                    await answered.wait()
        if oversized or ws.close_code is not None:
            async with asyncio.timeout(scaled(10)):
                await ws.wait_closed()
            tally.closes[ws.close_code or 0] += 1
            if ws.close_code != 1009:
                tally.problems.append(f"{name} closed with {ws.close_code} {ws.close_reason!r}")
        else:
            await ws.close()
        await reader


async def calm_client(server: GatewayProcess) -> list[str]:
    """Chats with a bounded window in flight; returns its texts as the server delivered them."""
    me = f"calm-{uuid.uuid4().hex[:8]}"
    ws = await open_ws(server.ws_url(f"/ws/{me}"), max_size=None)
    await recv_until(ws, of_type("joined"))
    mine: list[str] = []
    window = asyncio.Semaphore(20)
    done = asyncio.Event()

    async def read() -> None:
        """Reads until the close, so the closing handshake is never stuck behind fuzz traffic."""
        async for frame in ws:
            assert isinstance(frame, str)
            for line in filter(None, frame.split("\n")):
                event = json.loads(line)
                assert event["type"] != "error", f"the calm client got an error: {event}"
                if event["type"] == "message" and event["from"] == me:
                    mine.append(event["text"])
                    window.release()
                    if len(mine) == CALM_MESSAGES:
                        done.set()

    reader = asyncio.create_task(read())
    for n in range(CALM_MESSAGES):
        await window.acquire()
        await ws.send(json.dumps({"type": "message", "text": f"calm {n}"}))
    waiter = asyncio.create_task(done.wait())
    async with asyncio.timeout(scaled(20)):
        await asyncio.wait([reader, waiter], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if reader.done():
        reader.result()
    await ws.close()
    await reader
    return mine


# Raw sockets: what a client library never sends


RAW_ATTACKS: dict[str, tuple[Callable[[random.Random], bytes], set[int | None]]] = {
    "invalid-utf8": (lambda rng: masked_frame(0x1, b"ok \xc3\x28 \xff"), {1007}),
    "unmasked": (lambda rng: b"\x81\x05hello", {1002}),
    "reserved-opcode": (lambda rng: masked_frame(0x3, b"x"), {1002}),
    "rsv1-without-extension": (lambda rng: bytes([0xC1]) + masked_frame(0x1, b"x")[1:], {1002}),
    "orphan-continuation": (lambda rng: masked_frame(0x0, b"x"), {1002}),
    "long-ping": (lambda rng: b"\x89\xfe\x00\xc8" + b"\x00" * 4 + b"p" * 200, {1002}),
    "declared-2-63": (lambda rng: b"\x81\xff" + (2**63 - 1).to_bytes(8, "big"), {1009}),
    "garbage": (lambda rng: rng.randbytes(rng.randrange(1, 300)), SPEC_CLOSES | {None}),
}


async def raw_session(port: int, payload: bytes, handshake: bool) -> bytes:
    """Everything the server sent after ``payload`` (and the handshake, if asked for)."""
    if handshake:
        reader, writer = await open_raw(port, f"/ws/raw-{uuid.uuid4().hex[:8]}")
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        writer.write_eof()
        async with asyncio.timeout(scaled(10)):
            return await reader.read()
    finally:
        writer.close()


async def raw_attacks(server: GatewayProcess, rng: random.Random, tally: Tally) -> None:
    for name, (make, expected) in RAW_ATTACKS.items():
        for _ in range(5):
            code = first_close_code(await raw_session(server.port, make(rng), handshake=True))
            tally.closes[code or 0] += 1
            if code not in expected:
                tally.problems.append(f"raw {name}: close {code}, expected one of {expected}")
    for _ in range(10):
        answer = await raw_session(server.port, rng.randbytes(rng.randrange(1, 2000)), False)
        if answer and not answer.startswith(b"HTTP/1.1 4"):
            tally.problems.append(f"garbage before the handshake got {answer[:60]!r}")


async def test_hostile_frames_disturb_no_one(server: GatewayProcess) -> None:
    rng = random.Random(SEED)
    tally = Tally()
    rejected_before = metric(server.base_url, REJECTED, reason="invalid")
    async with asyncio.timeout(scaled(60)):
        calm, *_ = await asyncio.gather(
            calm_client(server),
            *(fuzzer(server, n, random.Random(rng.random()), tally) for n in range(FUZZERS)),
            raw_attacks(server, random.Random(rng.random()), tally),
        )
    context = f"(GATEWAY_FUZZ_SEED={SEED})"
    assert calm == [f"calm {n}" for n in range(CALM_MESSAGES)], context
    assert not tally.problems, f"{tally.problems[:10]} {context}"
    assert tally.frames == FUZZERS * FRAMES_PER_FUZZER
    assert set(tally.closes) >= SPEC_CLOSES, tally.closes
    assert tally.errors["invalid"] > FUZZERS * FRAMES_PER_FUZZER // 10, (tally.errors, context)
    assert metric(server.base_url, REJECTED, reason="invalid") > rejected_before
    assert metric(server.base_url, CLOSED, reason="error") == 0, context
    assert server.get("/healthz").status_code == 200
    for marker in ("Traceback", "connection failed", "Exception in ASGI application"):
        assert marker not in server.log(), f"{marker!r} in the server log {context}"


async def test_a_client_cannot_forge_server_errors_in_the_metrics(server: GatewayProcess) -> None:
    """A peer's close code is its own word: closing with 1011 counts as ``client``, while a
    protocol violation the server detects (1002) counts as ``policy``."""
    errors = metric(server.base_url, CLOSED, reason="error")
    clients = metric(server.base_url, CLOSED, reason="client")
    policy = metric(server.base_url, CLOSED, reason="policy")
    ws = await open_ws(server.ws_url(f"/ws/forger-{uuid.uuid4().hex[:8]}"))
    await recv_until(ws, of_type("joined"))
    await ws.close(code=1011, reason="pretend the server broke")
    wait_metric(server, CLOSED, clients + 1, reason="client")
    assert (
        first_close_code(await raw_session(server.port, b"\x81\x05hello", handshake=True)) == 1002
    )
    wait_metric(server, CLOSED, policy + 1, reason="policy")
    assert metric(server.base_url, CLOSED, reason="error") == errors
