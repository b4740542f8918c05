"""Every kind of bad input gets the spec's answer, is counted, and disturbs nobody else."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from websockets.asyncio.client import ClientConnection

from tests.support.clients import of_type, open_ws, recv_until, wait_closed
from tests.support.metrics import metric
from tests.support.rawws import masked_frame, raw_handshake
from tests.support.servers import GatewayProcess, start_gateway, wait_until

REJECTED = "gateway_messages_rejected_total"
CLOSED = "gateway_connections_closed_total"


@pytest.fixture(scope="module")
def server() -> Iterator[GatewayProcess]:
    env = {
        "GATEWAY_MAX_FRAME_BYTES": "4096",
        "GATEWAY_MAX_MESSAGE_BYTES": "100",
        "GATEWAY_RATE_LIMIT": "3/60",
        "GATEWAY_RATE_LIMIT_STRIKES": "2",
    }
    with start_gateway(env) as gateway:
        yield gateway


@pytest.fixture
async def bystander(server: GatewayProcess) -> AsyncIterator[ClientConnection]:
    """A well-behaved client that must keep being served whatever the others do."""
    ws = await open_ws(server.ws_url(f"/ws/bystander-{uuid.uuid4().hex[:12]}"))
    await recv_until(ws, of_type("joined"))
    yield ws
    await ws.send(json.dumps({"type": "message", "text": "still served"}))
    await recv_until(ws, of_type("message", text="still served"))
    await ws.close()


async def expect_error(ws: ClientConnection, frame: str | bytes, code: str) -> None:
    await ws.send(frame)
    event, _ = await recv_until(ws, of_type("error"))
    assert event["code"] == code, event


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("x" * 101, "too_large"),
        ('{"type":"message","text":"' + "y" * 101 + '"}', "too_large"),
        ("{malformed json", "invalid"),
        ('{"type":"teleport"}', "invalid"),
        ('{"type":"message","text":""}', "invalid"),
        ("   ", "invalid"),
        (b"\x00\x01binary", "invalid"),
    ],
    ids=["long-text", "long-json-text", "malformed", "unknown-type", "empty-json", "blank", "bin"],
)
async def test_bad_message_gets_error_and_connection_stays(
    server: GatewayProcess, bystander: ClientConnection, frame: str | bytes, code: str
) -> None:
    before = metric(server.base_url, REJECTED, reason=code)
    ws = await open_ws(server.ws_url(f"/ws/bad-{code}-{len(frame)}"))
    await recv_until(ws, of_type("joined"))
    await expect_error(ws, frame, code)
    assert metric(server.base_url, REJECTED, reason=code) == before + 1
    await ws.send(json.dumps({"type": "ping"}))
    await recv_until(ws, of_type("pong"))
    await ws.close()


async def test_oversized_frame_closes_with_1009(
    server: GatewayProcess, bystander: ClientConnection
) -> None:
    before = metric(server.base_url, CLOSED, reason="policy")
    ws = await open_ws(server.ws_url("/ws/bad-huge-frame"), max_size=None)
    await recv_until(ws, of_type("joined"))
    await ws.send("z" * 5000)
    code, _ = await wait_closed(ws)
    assert code == 1009
    wait_until(
        lambda: metric(server.base_url, CLOSED, reason="policy") == before + 1,
        5,
        "1009 close not counted as policy",
    )


async def test_invalid_utf8_closes_with_1007(
    server: GatewayProcess, bystander: ClientConnection
) -> None:
    sock = raw_handshake(server.port, "/ws/bad-utf8")
    sock.sendall(masked_frame(0x1, b"caf\xc3"))
    received = b""
    for _ in range(100):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
        close_at = received.find(b"\x88")
        if close_at >= 0 and len(received) >= close_at + 4:
            break
    close_at = received.find(b"\x88")
    assert close_at >= 0, received
    assert int.from_bytes(received[close_at + 2 : close_at + 4], "big") == 1007
    sock.close()


async def test_duplicate_client_id_is_refused_with_1008(
    server: GatewayProcess, bystander: ClientConnection
) -> None:
    first = await open_ws(server.ws_url("/ws/bad-twin"))
    await recv_until(first, of_type("joined"))
    second = await open_ws(server.ws_url("/ws/bad-twin"))
    code, reason = await wait_closed(second)
    assert (code, reason) == (1008, "client id already connected")
    await first.send(json.dumps({"type": "message", "text": "the original stays"}))
    await recv_until(first, of_type("message", text="the original stays"))
    await first.close()


async def test_repeated_rate_limit_abuse_closes_with_1008(
    server: GatewayProcess, bystander: ClientConnection
) -> None:
    before = metric(server.base_url, REJECTED, reason="rate_limited")
    ws = await open_ws(server.ws_url("/ws/bad-spammer"))
    await recv_until(ws, of_type("joined"))
    for n in range(3):
        await ws.send(f"allowed {n}")
        await recv_until(ws, of_type("message", text=f"allowed {n}"))
    await expect_error(ws, "too fast", "rate_limited")
    await ws.send("still too fast")
    code, reason = await wait_closed(ws)
    assert (code, reason) == (1008, "repeated rate-limit violations")
    assert metric(server.base_url, REJECTED, reason="rate_limited") == before + 2


async def test_unknown_wire_format_is_refused(server: GatewayProcess) -> None:
    ws = await open_ws(server.ws_url("/ws/bad-format?format=xml"))
    code, _ = await wait_closed(ws)
    assert code == 1008
