"""A close the peer never lets drain: a peer that stops reading with the server's buffer full
must not hold its socket forever, whoever starts the close (the peer, or the heartbeat)."""

from __future__ import annotations

import os
import struct

import pytest

from tests.security.helpers import CLOSED, bystander, chat_once, unique
from tests.support.metrics import metric
from tests.support.rawws import masked_frame, raw_handshake
from tests.support.servers import GatewayProcess, poll_until, start_gateway

PINGS = 20_000
"""About 2.5 MiB of pongs: far more than the client's receive and the server's send buffers."""


def open_fds(server: GatewayProcess) -> int:
    return len(os.listdir(f"/proc/{server.pid}/fd"))


@pytest.mark.parametrize("who_closes", ["peer", "heartbeat"])
async def test_a_close_stuck_behind_an_unread_buffer_is_cut(who_closes: str) -> None:
    env = {
        "GATEWAY_SEND_QUEUE": "1000000",
        "GATEWAY_SOCKET_SEND_BUFFER": "65536",
        "GATEWAY_IDLE_TIMEOUT": "0",
        "GATEWAY_HEARTBEAT_INTERVAL": "1" if who_closes == "heartbeat" else "60",
        "GATEWAY_HEARTBEAT_TIMEOUT": "1" if who_closes == "heartbeat" else "60",
    }
    with start_gateway(env) as server:
        async with bystander(server, unique("calm")) as calm:
            baseline = open_fds(server)
            reason = "client" if who_closes == "peer" else "heartbeat_timeout"
            before = metric(server.base_url, CLOSED, reason=reason)
            sock = raw_handshake(server.port, unique("stuck"), receive_buffer=4096)
            try:
                sock.sendall(masked_frame(0x9, b"p" * 125) * PINGS)
                if who_closes == "peer":
                    sock.sendall(masked_frame(0x8, struct.pack("!H", 1000)))
                await poll_until(
                    lambda: metric(server.base_url, CLOSED, reason=reason) == before + 1,
                    10,
                    f"no {reason} close counted",
                )
                await poll_until(
                    lambda: open_fds(server) <= baseline,
                    25,
                    f"the stuck socket is still open ({open_fds(server)} fds, was {baseline})",
                )
                await chat_once(calm)
            finally:
                sock.close()
