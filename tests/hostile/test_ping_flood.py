"""A peer that floods pings and never reads: its pongs count against its send queue (SPEC
"Hardening", bounded memory per connection), so the server cuts it as a slow consumer instead of
buffering every pong."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

from tests.security.helpers import CLOSED, bystander, chat_once, unique
from tests.support.metrics import metric
from tests.support.rawws import masked_frame, raw_handshake
from tests.support.servers import GatewayProcess, scaled, start_gateway

FLOOD_BYTES = 250 * 1024 * 1024
RSS_GROWTH_BOUND = 32 * 1024 * 1024
PING = masked_frame(0x9, b"p" * 125)
BATCH = PING * 512


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class Flooder(threading.Thread):
    """Sends masked pings, never reads; stops at the byte budget, the deadline, a send that
    stays blocked (the server stopped reading) or an error (the server cut the connection)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.deadline = deadline
        self.sent = 0
        self.ended = ""
        self.stop = threading.Event()

    def run(self) -> None:
        self.sock.settimeout(scaled(2))
        try:
            while self.sent < FLOOD_BYTES and not self.stop.is_set():
                if time.monotonic() > self.deadline:
                    self.ended = "deadline"
                    return
                self.sock.sendall(BATCH)
                self.sent += len(BATCH)
            self.ended = "budget" if self.sent >= FLOOD_BYTES else "stopped"
        except TimeoutError:
            self.ended = "server stopped reading"
        except OSError as error:
            self.ended = f"cut: {error.__class__.__name__}"


async def peak_rss_while(server: GatewayProcess, flooder: Flooder, baseline: int) -> int:
    """The server's highest RSS until the flood ends (bounded: the flood has a deadline, and
    this loop a count); the event loop keeps running, so the bystander answers heartbeats."""
    peak = baseline
    for _ in range(int(scaled(60) / 0.05)):
        peak = max(peak, rss_bytes(server.pid))
        if not flooder.is_alive() or peak - baseline > RSS_GROWTH_BOUND:
            break
        await asyncio.sleep(0.05)
    return max(peak, rss_bytes(server.pid))


async def test_ping_flood_from_a_peer_that_never_reads_is_cut_as_slow_consumer() -> None:
    env = {
        "GATEWAY_SEND_QUEUE": "200",
        "GATEWAY_SOCKET_SEND_BUFFER": "65536",
        "GATEWAY_IDLE_TIMEOUT": "0",
        "GATEWAY_RATE_LIMIT": "0",
    }
    with start_gateway(env) as server:
        async with bystander(server, unique("calm")) as calm:
            before = metric(server.base_url, CLOSED, reason="slow_consumer")
            sock = raw_handshake(server.port, unique("pinger"), receive_buffer=4096)
            baseline = rss_bytes(server.pid)
            flooder = Flooder(sock, time.monotonic() + scaled(45))
            flooder.start()
            try:
                peak = await peak_rss_while(server, flooder, baseline)
                await chat_once(calm)
            finally:
                flooder.stop.set()
                flooder.join(scaled(10))
                sock.close()
            growth_mib = (peak - baseline) / 2**20
            print(f"ping flood: sent {flooder.sent / 2**20:.0f} MiB, ended by {flooder.ended}")
            print(f"server RSS growth {growth_mib:.1f} MiB")
            assert peak - baseline < RSS_GROWTH_BOUND, f"RSS grew {growth_mib:.0f} MiB"
            assert metric(server.base_url, CLOSED, reason="slow_consumer") == before + 1
            await chat_once(calm)
