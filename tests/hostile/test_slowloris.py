"""Slowloris: silent TCP connections and upgrades that never finish must not hold sockets past
``GATEWAY_HANDSHAKE_TIMEOUT``, and count toward ``GATEWAY_MAX_CONNECTIONS`` meanwhile, so a
server with few file descriptors keeps serving (SPEC "Hardening")."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.security.helpers import REFUSED, bystander, chat_once, unique
from tests.support.clients import of_type, open_ws, recv_until
from tests.support.fleet import fleet, fleet_env
from tests.support.metrics import metric
from tests.support.servers import GATEWAY_BIN, GatewayProcess, launch_gateway, scaled

FD_LIMIT = 256
MAX_CONNECTIONS = 100
SILENT = 300
HALF_SENT = 20
DRIBBLING = 10
HALF_UPGRADE = "GET /ws/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"


@pytest.fixture(scope="module")
def starved() -> Iterator[GatewayProcess]:
    """A gateway with 256 file descriptors and a one-second handshake deadline."""
    env = {
        "GATEWAY_HANDSHAKE_TIMEOUT": "1",
        "GATEWAY_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "GATEWAY_IDLE_TIMEOUT": "0",
        "GATEWAY_RATE_LIMIT": "0",
    }
    command = ["prlimit", f"--nofile={FD_LIMIT}:{FD_LIMIT}", str(GATEWAY_BIN), "serve"]
    server = launch_gateway(env, command=command)
    try:
        yield server
    finally:
        server.stop()


def open_fds(server: GatewayProcess) -> int:
    return len(os.listdir(f"/proc/{server.pid}/fd"))


def connect(port: int, first_bytes: str = "") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    if first_bytes:
        sock.sendall(first_bytes.encode())
    sock.setblocking(False)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def refused_total(server: GatewayProcess) -> float:
    return sum(
        metric(server.base_url, REFUSED, reason=reason)
        for reason in ("handshake_timeout", "over_capacity")
    )


async def test_silent_and_half_sent_connections_are_cut_and_the_server_keeps_serving(
    starved: GatewayProcess,
) -> None:
    async with bystander(starved, unique("calm")) as calm:
        before = refused_total(starved)
        baseline = open_fds(starved)
        socks = [connect(starved.port) for _ in range(SILENT)]
        socks += [connect(starved.port, HALF_UPGRADE) for _ in range(HALF_SENT)]
        dribblers = [connect(starved.port, "G") for _ in range(DRIBBLING)]
        socks += dribblers
        peak = baseline
        started = time.monotonic()
        try:
            open_socks = list(socks)
            for _ in range(int(scaled(20) / 0.1)):
                peak = max(peak, open_fds(starved))
                readable, _, _ = select.select(open_socks, [], [], 0)
                open_socks = [s for s in open_socks if s not in readable or not closed_by_server(s)]
                for sock in dribblers:
                    if sock in open_socks:
                        with contextlib.suppress(OSError):
                            sock.send(b"E")
                if not open_socks:
                    break
                await chat_once(calm)
                await asyncio.sleep(0.1)
            cut_after = time.monotonic() - started
            print(f"peak server fds {peak} (baseline {baseline}); all cut after {cut_after:.1f}s")
            assert not open_socks, f"{len(open_socks)} of {len(socks)} still open"
        finally:
            for sock in socks:
                sock.close()
        assert peak <= baseline + MAX_CONNECTIONS + 16 + 8, f"server held {peak} fds"
        assert httpx.get(starved.base_url + "/healthz", timeout=scaled(5)).status_code == 200
        assert refused_total(starved) - before == len(socks)
        newcomer = await open_ws(starved.ws_url(unique("newcomer")))
        await recv_until(newcomer, of_type("joined"))
        await chat_once(newcomer)
        await newcomer.close()


def wait_all_closed(socks: list[socket.socket], timeout: float) -> list[socket.socket]:
    """The sockets the server has not closed once ``timeout`` (scaled) passed or all were."""
    open_socks = list(socks)
    deadline = time.monotonic() + scaled(timeout)
    for _ in range(int(scaled(timeout) / 0.05) + 1):
        readable, _, _ = select.select(open_socks, [], [], 0.05)
        open_socks = [s for s in open_socks if s not in readable or not closed_by_server(s)]
        if not open_socks or time.monotonic() > deadline:
            break
    return open_socks


async def test_a_kept_alive_connection_must_finish_its_next_request_in_time(
    starved: GatewayProcess,
) -> None:
    """uvicorn's keep-alive timer stops at the next request's first byte: without a deadline,
    a request left unfinished after a first answer would hold the socket for good."""
    async with bystander(starved, unique("calm")):
        before = metric(starved.base_url, REFUSED, reason="handshake_timeout")
        sock = connect(starved.port, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            sock.setblocking(True)
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(4096)
                assert chunk, "closed before answering"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200"), answer
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost:")
            sock.setblocking(False)
            assert not wait_all_closed([sock], 10), "the unfinished second request is still open"
        finally:
            sock.close()
        assert metric(starved.base_url, REFUSED, reason="handshake_timeout") == before + 1


@pytest.mark.redis
async def test_gunicorn_workers_cut_unfinished_handshakes_too(redis_url: str) -> None:
    env = fleet_env(redis_url, {"GATEWAY_HANDSHAKE_TIMEOUT": "1", "GATEWAY_IDLE_TIMEOUT": "0"})
    with fleet(env) as server:
        async with bystander(server, unique("calm")) as calm:
            before = metric(server.base_url, REFUSED, reason="handshake_timeout")
            socks = [connect(server.port) for _ in range(60)]
            socks += [connect(server.port, HALF_UPGRADE) for _ in range(10)]
            try:
                still_open = wait_all_closed(socks, 10)
                assert not still_open, f"{len(still_open)} of {len(socks)} still open"
            finally:
                for sock in socks:
                    sock.close()
            await chat_once(calm)
            assert metric(server.base_url, REFUSED, reason="handshake_timeout") == before + 70
            assert server.get("/healthz").status_code == 200
