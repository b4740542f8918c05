"""Experiment: the Python cost of one delivery, without sockets, for a repeatable A/B.

A node over the memory broker with ``--receivers`` sessions in the lobby, each behind the real
:class:`~gateway.server.wsprotocol.GatewayWebSocketProtocol` (corking included) over a
transport whose ``write`` does nothing, so the kernel's ``send()`` is left out. The driver calls
the hub's fan-out (``Hub.deliver``) for ``--messages`` publications, ``--per-tick`` of them in
each event-loop tick: 1 is the quiet path (40 msg/s: every frame is its socket's first of a
tick), more is the corked full-rate path. It prints CPU µs per delivery; on a noisy machine
the figure to compare is callgrind's instruction count: two runs that differ only in
``--messages`` (10 and 60), their difference divided by 50 times ``--receivers``, leaves out the
imports and connecting.

    python -m loadtest.experiments.fanout_micro --receivers 1000 --messages 2000
    valgrind --tool=callgrind python -m loadtest.experiments.fanout_micro \
        --receivers 200 --messages 60 --uvloop
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState
from websockets.protocol import State

from gateway.broker import Envelope, room_channel
from gateway.node import Node
from gateway.outbox import Outbox
from gateway.protocol import DEFAULT_ROOM, WireFormat
from gateway.server.wsprotocol import GatewayWebSocketProtocol
from gateway.settings import RateLimit, load_settings


class NullTransport(asyncio.Transport):
    """Takes every write and sends nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, data: Any) -> None:
        self.written += 1

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )


async def _app(scope: Any, receive: Any, send: Any) -> None:  # never called here
    raise AssertionError


def _protocol(config: Config) -> tuple[GatewayWebSocketProtocol, NullTransport]:
    protocol = GatewayWebSocketProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    transport = NullTransport()
    protocol.connection_made(transport)
    protocol.handshake_complete = True
    protocol.conn.state = State.OPEN
    return protocol, transport


async def run(receivers: int, messages: int, per_tick: int) -> None:
    settings = load_settings(rate_limit=RateLimit(0, 0), idle_timeout=0, presence_batch_ms=0)
    node = Node(settings)
    await node.start()
    config = Config(app=_app, ws=GatewayWebSocketProtocol, ws_ping_interval=None)
    config.load()
    transports = []
    for n in range(receivers):
        protocol, transport = _protocol(config)
        transports.append(transport)
        outbox = Outbox(protocol, WireFormat.JSON, settings.send_queue)
        session = node.new_session(f"user{n}", WireFormat.JSON, outbox)
        assert await node.hub.attach(session, allow_duplicate=True) is None
    for _ in range(3):
        await asyncio.sleep(0)
    channel = room_channel(DEFAULT_ROOM)
    before = sum(t.written for t in transports)
    started = time.process_time()
    for seq in range(1, messages + 1):
        event: dict[str, Any] = {"type": "message", "id": str(seq), "room": DEFAULT_ROOM}
        event |= {"from": "x", "text": "hello world", "ts": time.time()}
        node.hub.deliver(Envelope(channel, event, time.time(), seq))
        if seq % per_tick == 0:
            await asyncio.sleep(0)
    await asyncio.sleep(0)
    elapsed = time.process_time() - started
    writes = sum(t.written for t in transports) - before
    deliveries = receivers * messages
    print(
        f"{deliveries} deliveries, {writes} writes, "
        f"{elapsed / deliveries * 1e6:.3f} µs CPU per delivery"
    )
    await node.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receivers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--per-tick", type=int, default=1)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(run(args.receivers, args.messages, args.per_tick))


if __name__ == "__main__":
    main()
