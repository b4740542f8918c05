"""Tokens, refused handshakes and a bystander that must keep chatting through every attack."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.clients import of_type, open_ws, recv_until
from tests.support.metrics import metric
from tests.support.servers import GatewayProcess, scaled, wait_until

SECRET = "security-suite-secret-0123456789abcdef"
OTHER_SECRET = "some-other-secret-of-the-same-size-00000"
REFUSED = "gateway_connections_refused_total"
CLOSED = "gateway_connections_closed_total"
REJECTED = "gateway_messages_rejected_total"


def unique(name: str) -> str:
    """A chat path of its own, so tests sharing a server never share a user."""
    return f"/ws/{name}-{uuid.uuid4().hex[:8]}"


def claims(sub: str = "alice", ttl: int = 300, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": now + ttl, **extra}


def sign(payload: dict[str, Any], key: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=algorithm)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(
    header: dict[str, Any], payload: dict[str, Any], key: str | None = None, digest: str = "sha256"
) -> str:
    """A token assembled by hand: whatever header it claims, HMAC-signed under ``key`` with
    ``digest`` (or unsigned when ``key`` is None)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    if key is None:
        return signing_input + "."
    mac = hmac.new(key.encode(), signing_input.encode(), getattr(hashlib, digest)).digest()
    return f"{signing_input}.{b64(mac)}"


def token(sub: str = "alice", ttl: int = 300, **extra: Any) -> str:
    return sign(claims(sub, ttl, **extra))


async def refused(url: str, **kwargs: Any) -> tuple[int, str, dict[str, str]]:
    """The HTTP answer to a handshake that must not be upgraded."""
    try:
        ws = await open_ws(url, **kwargs)
    except InvalidStatus as error:
        response = error.response
        return response.status_code, bytes(response.body or b"").decode(), dict(response.headers)
    await ws.close()
    raise AssertionError(f"{url} was upgraded")


async def closed_before_any_data(ws: ClientConnection, within: float = 5) -> tuple[int, str]:
    """The close code and reason of a socket the server closes without sending a data frame."""
    frame: object = None
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(scaled(within)):
            frame = await ws.recv()
    assert frame is None, f"data flowed before the close: {frame!r}"
    close = ws.protocol.close_rcvd
    assert close is not None, "no close frame from the server"
    return close.code, close.reason


async def chat_once(ws: ClientConnection, text: str | None = None) -> None:
    text = text or f"still served {uuid.uuid4().hex[:8]}"
    await ws.send(json.dumps({"type": "message", "text": text}))
    await recv_until(ws, of_type("message", text=text))


@asynccontextmanager
async def bystander(server: GatewayProcess, path: str) -> AsyncIterator[ClientConnection]:
    """A well-behaved client connected through the block; it must still chat afterwards."""
    ws = await open_ws(server.ws_url(path))
    try:
        await recv_until(ws, of_type("joined"))
        await chat_once(ws)
        yield ws
        await chat_once(ws)
    finally:
        await ws.close()


def wait_metric(server: GatewayProcess, name: str, value: float, **labels: str) -> None:
    wait_until(
        lambda: metric(server.base_url, name, **labels) == value,
        5,
        f"{name}{labels} never reached {value} (now {metric(server.base_url, name, **labels)})",
    )


def wait_connections(server: GatewayProcess, count: int) -> None:
    wait_metric(server, "gateway_connections", count)
