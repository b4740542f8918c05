"""Write corking on the real protocol class over a recording transport: a socket's first frame
of a tick goes out at once, later ones in one write on the next tick, and nothing the server
itself writes (a close frame) ever overtakes a corked message."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState
from websockets.protocol import State

from gateway.frames import encode_text_frame
from gateway.server.corking import CORK_LIMIT
from gateway.server.wsprotocol import GatewayWebSocketProtocol


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: Any) -> None:
        assert not self.closing, "write after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )


async def _app(scope: Any, receive: Any, send: Any) -> None:  # never called here
    raise AssertionError


def _connected() -> tuple[GatewayWebSocketProtocol, RecordingTransport]:
    config = Config(app=_app, ws=GatewayWebSocketProtocol, ws_ping_interval=None)
    config.load()
    protocol = GatewayWebSocketProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.handshake_complete = True
    protocol.conn.state = State.OPEN
    return protocol, transport


async def _next_tick() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


FRAMES = [encode_text_frame(f"message {n}") for n in range(4)]


async def test_first_frame_of_a_tick_is_written_at_once_the_rest_together_next_tick() -> None:
    protocol, transport = _connected()
    for frame in FRAMES:
        protocol.write_now(frame)
    assert transport.writes == [FRAMES[0]]
    await _next_tick()
    assert transport.writes == [FRAMES[0], b"".join(FRAMES[1:])]


async def test_a_quiet_socket_writes_every_frame_at_once() -> None:
    protocol, transport = _connected()
    for frame in FRAMES:
        protocol.write_now(frame)
        await _next_tick()
    assert transport.writes == FRAMES


async def test_a_close_frame_goes_out_behind_corked_frames() -> None:
    protocol, transport = _connected()
    for frame in FRAMES:
        protocol.write_now(frame)
    protocol.close_now(1001, "going away")
    assert b"".join(transport.writes[:2]) == b"".join(FRAMES)
    assert transport.writes[2][:2] == b"\x88\x0c"  # the close frame: 1001 + reason
    await _next_tick()
    assert len(transport.writes) == 3


async def test_the_servers_own_close_flushes_the_cork_before_the_socket_closes() -> None:
    protocol, transport = _connected()
    for frame in FRAMES:
        protocol.write_now(frame)
    protocol.transport.close()
    assert b"".join(transport.writes) == b"".join(FRAMES)
    assert transport.closing


async def test_an_abort_drops_the_cork_and_writes_nothing_after() -> None:
    protocol, transport = _connected()
    for frame in FRAMES:
        protocol.write_now(frame)
    protocol.transport.abort()
    await _next_tick()
    assert transport.writes == [FRAMES[0]]


async def test_a_full_cork_makes_the_socket_unwritable_until_flushed() -> None:
    protocol, transport = _connected()
    big = encode_text_frame("x" * 1024)
    assert protocol.write_now(big)
    written = 0
    while protocol.write_now(big):
        written += 1
        assert written <= CORK_LIMIT // len(big) + 1
    assert written >= CORK_LIMIT // len(big) - 1
    await _next_tick()
    assert len(transport.writes) == 2
    assert protocol.write_now(big)


async def test_the_writers_frame_goes_out_behind_a_full_cork() -> None:
    """The outbox's writer sends what the fast path could not: past the cork's limit it is
    written after the held frames, never dropped and never ahead of them."""
    protocol, transport = _connected()
    big = encode_text_frame("x" * 1024)
    sent = [big]
    assert protocol.write_now(big)
    while protocol.write_now(big):
        sent.append(big)
    await protocol.send_text("from the queue")
    await _next_tick()
    assert b"".join(transport.writes) == b"".join(sent) + encode_text_frame("from the queue")


async def test_transport_back_pressure_makes_the_socket_unwritable() -> None:
    protocol, _ = _connected()
    protocol.pause_writing()
    assert not protocol.write_now(FRAMES[0])
    protocol.resume_writing()
    assert protocol.write_now(FRAMES[0])


async def test_after_a_tick_that_combined_frames_first_frames_wait_too_until_load_passes() -> None:
    protocol, transport = _connected()
    protocol.write_now(FRAMES[0])
    protocol.write_now(FRAMES[1])
    await _next_tick()
    assert transport.writes == [FRAMES[0], FRAMES[1]]

    protocol.write_now(FRAMES[2])  # the loop is busy: even the first frame of a tick waits
    assert transport.writes == [FRAMES[0], FRAMES[1]]
    await _next_tick()
    assert transport.writes[2:] == [FRAMES[2]]

    protocol.write_now(FRAMES[3])  # the last flush combined nothing: first frames go at once
    assert transport.writes[3:] == [FRAMES[3]]
