"""Heartbeats drop silent peers; idle connections close with 4408; both are counted by reason."""

from __future__ import annotations

import asyncio
import json
import socket
import time

from tests.support.clients import of_type, open_ws, recv_until, wait_closed
from tests.support.metrics import metric
from tests.support.rawws import raw_handshake
from tests.support.servers import scaled, start_gateway, wait_until

CLOSED = "gateway_connections_closed_total"


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    for _ in range(1000):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


async def test_peer_that_never_answers_pings_is_dropped() -> None:
    env = {
        "GATEWAY_HEARTBEAT_INTERVAL": "0.5",
        "GATEWAY_HEARTBEAT_TIMEOUT": "0.5",
        "GATEWAY_IDLE_TIMEOUT": "0",
    }
    with start_gateway(env) as server:
        healthy = await open_ws(server.ws_url("/ws/healthy"))
        await recv_until(healthy, of_type("joined"))
        silent = raw_handshake(server.port, "/ws/silent")
        silent.settimeout(scaled(5))
        started = time.monotonic()
        received = await asyncio.to_thread(read_until_closed, silent)
        dropped_after = time.monotonic() - started
        silent.close()
        assert b"\x89" in received, "the server never pinged"
        assert dropped_after < scaled(5)
        wait_until(
            lambda: metric(server.base_url, CLOSED, reason="heartbeat_timeout") == 1,
            5,
            "heartbeat drop not counted",
        )
        await healthy.send(json.dumps({"type": "message", "text": "pings answered"}))
        await recv_until(healthy, of_type("message", text="pings answered"))
        assert metric(server.base_url, "gateway_connections") == 1
        await healthy.close()


async def test_idle_connection_closes_with_4408_and_active_one_stays() -> None:
    with start_gateway({"GATEWAY_IDLE_TIMEOUT": "1"}) as server:
        idle = await open_ws(server.ws_url("/ws/idler"))
        active = await open_ws(server.ws_url("/ws/chatter"))

        async def keep_talking() -> None:
            for _ in range(100):
                await active.send(json.dumps({"type": "ping"}))
                await recv_until(active, of_type("pong"))
                await asyncio.sleep(0.2)

        talker = asyncio.create_task(keep_talking())
        code, reason = await wait_closed(idle, timeout=10)
        assert (code, reason) == (4408, "idle timeout")
        assert not talker.done()
        talker.cancel()
        await active.send(json.dumps({"type": "ping"}))
        await recv_until(active, of_type("pong"))
        assert metric(server.base_url, CLOSED, reason="idle_timeout") >= 1
        await active.close()
