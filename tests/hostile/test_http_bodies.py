"""SPEC "Hardening", bounded memory: an HTTP request body is refused before it is read when the
request is unauthorised (401/404) or larger than 64 KiB (413), chunked bodies included.

Each attack streams up to 100 MB from a bounded generator at a real ``gateway serve`` and
asserts the status, the refusal counter, and the server's peak RSS growth (``VmHWM``), while a
bystander chats throughout. A fresh server per attack: ``VmHWM`` only ever rises.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.hostile.uploads import upload, vm_kib
from tests.security.helpers import bystander, chat_once
from tests.support.clients import of_type, recv_until
from tests.support.metrics import metric
from tests.support.servers import GatewayProcess, scaled, start_gateway

API_KEY = "hostile-http-key-" + "k" * 32
HUNDRED_MB = 100 * 1024 * 1024
RSS_BOUND_KIB = 20 * 1024
REFUSED = "gateway_http_requests_refused_total"
PUBLISH = "/api/rooms/lobby/messages"


@pytest.fixture
def keyed() -> Iterator[GatewayProcess]:
    with start_gateway({"GATEWAY_API_KEY": API_KEY, "GATEWAY_RATE_LIMIT": "0"}) as gateway:
        yield gateway


@pytest.fixture
def keyless() -> Iterator[GatewayProcess]:
    with start_gateway({"GATEWAY_RATE_LIMIT": "0"}) as gateway:
        yield gateway


async def attack(
    server: GatewayProcess, headers: dict[str, str], chunked: bool, expected: int, reason: str
) -> None:
    before_rss = vm_kib(server.pid)
    before_count = metric(server.base_url, REFUSED, reason=reason)
    async with bystander(server, f"/ws/calm-{uuid.uuid4().hex[:8]}") as ws:
        sending = asyncio.create_task(
            asyncio.to_thread(upload, server.port, PUBLISH, HUNDRED_MB, headers, chunked)
        )
        while not sending.done():
            await chat_once(ws)
            await asyncio.wait({sending}, timeout=scaled(0.2))
        result = await sending
    grown = vm_kib(server.pid) - before_rss
    seen = f"status {result.status}, {result.sent >> 20} MiB sent, peak RSS +{grown >> 10} MiB"
    assert result.status == expected, seen
    assert grown < RSS_BOUND_KIB, seen
    assert result.sent < HUNDRED_MB, f"the server read the whole body before refusing: {seen}"
    assert metric(server.base_url, REFUSED, reason=reason) == before_count + 1
    assert server.alive()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_unauthenticated_body_is_refused_unread(
    keyed: GatewayProcess, chunked: bool
) -> None:
    await attack(keyed, {}, chunked, 401, "unauthorized")


async def test_a_wrong_key_is_refused_unread(keyed: GatewayProcess) -> None:
    await attack(keyed, {"Authorization": "Bearer nope"}, True, 401, "unauthorized")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_with_the_api_off_is_refused_unread(
    keyless: GatewayProcess, chunked: bool
) -> None:
    await attack(keyless, {"Authorization": f"Bearer {API_KEY}"}, chunked, 404, "api_off")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_authorised_body_over_64_kib_is_refused(
    keyed: GatewayProcess, chunked: bool
) -> None:
    await attack(keyed, {"Authorization": f"Bearer {API_KEY}"}, chunked, 413, "too_large")


def test_a_declared_length_over_64_kib_is_refused_before_any_byte(keyed: GatewayProcess) -> None:
    result = upload(keyed.port, PUBLISH, 64 * 1024 + 1, {"Authorization": f"Bearer {API_KEY}"})
    assert result.status == 413
    assert b"connection: close" in result.head.lower()


async def test_an_authorised_chunked_publish_under_the_cap_goes_through(
    keyed: GatewayProcess,
) -> None:
    text = f"chunked {uuid.uuid4().hex[:8]}"

    def pieces() -> Iterator[bytes]:
        body = json.dumps({"text": text}).encode()
        yield body[:5]
        yield body[5:]

    async with bystander(keyed, f"/ws/reader-{uuid.uuid4().hex[:8]}") as ws:
        response = httpx.post(
            keyed.base_url + PUBLISH,
            content=pieces(),
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
            timeout=scaled(5),
        )
        assert response.status_code == 202, response.text
        event, _ = await recv_until(ws, of_type("message", text=text))
        assert event["id"] == response.json()["id"]


def test_a_body_of_exactly_64_kib_is_read(keyed: GatewayProcess) -> None:
    """The cap is 64 KiB inclusive: such a body reaches the route, which judges the text."""
    body = json.dumps({"text": ""}).encode()
    body = body[:-2] + b"x" * (64 * 1024 - len(body)) + body[-2:]
    assert len(body) == 64 * 1024
    response = httpx.post(
        keyed.base_url + PUBLISH,
        content=body,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        timeout=scaled(5),
    )
    assert response.status_code == 422, response.text


async def test_a_body_cut_short_is_not_acted_on(keyed: GatewayProcess) -> None:
    """A client that leaves mid-body: what arrived must not pass for the whole request."""
    cut = f"cut short {uuid.uuid4().hex[:8]}"
    after = f"after {uuid.uuid4().hex[:8]}"
    piece = json.dumps({"text": cut}).encode()
    head = (
        f"POST {PUBLISH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    async with bystander(keyed, f"/ws/watcher-{uuid.uuid4().hex[:8]}") as ws:
        _, writer = await asyncio.open_connection("127.0.0.1", keyed.port)
        writer.write(head.encode() + f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        response = httpx.post(
            keyed.base_url + PUBLISH,
            json={"text": after},
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=scaled(5),
        )
        assert response.status_code == 202
        _, seen = await recv_until(ws, of_type("message", text=after))
        await chat_once(ws)
    assert all(event.get("text") != cut for event in seen), "a truncated body was published"
