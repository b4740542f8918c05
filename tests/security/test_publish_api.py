"""The server-side publish API: off without a key, and only the exact bearer key gets in."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.security.helpers import bystander
from tests.support.clients import of_type, recv_until
from tests.support.servers import GatewayProcess, start_gateway

API_KEY = "publish-key-" + "k" * 32


@pytest.fixture(scope="module")
def server() -> Iterator[GatewayProcess]:
    with start_gateway({"GATEWAY_API_KEY": API_KEY, "GATEWAY_RATE_LIMIT": "0"}) as gateway:
        yield gateway


def publish(
    server: GatewayProcess, authorization: str | None, body: object = None, room: str = "lobby"
) -> httpx.Response:
    headers = {} if authorization is None else {"Authorization": authorization}
    return httpx.post(
        f"{server.base_url}/api/rooms/{room}/messages",
        json={"text": "from the API"} if body is None else body,
        headers=headers,
        timeout=5,
    )


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer wrong",
        f"Bearer {API_KEY[:-1]}",
        f"Bearer {API_KEY}x",
        f"Basic {API_KEY}",
        API_KEY,
        f"Bearer  {API_KEY}",
    ],
    ids=[
        "no-header",
        "empty",
        "scheme-only",
        "wrong",
        "prefix",
        "longer",
        "basic",
        "no-scheme",
        "two-spaces",
    ],
)
def test_anything_but_the_exact_key_is_401(server: GatewayProcess, authorization: str) -> None:
    response = publish(server, authorization)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert API_KEY not in response.text


def test_unauthenticated_callers_learn_nothing_about_the_body_or_room(
    server: GatewayProcess,
) -> None:
    assert publish(server, "Bearer wrong", body={"nonsense": True}).status_code == 401
    assert publish(server, None, room="no such room!").status_code == 401


async def test_the_key_publishes(server: GatewayProcess) -> None:
    async with bystander(server, f"/ws/listener-{uuid.uuid4().hex[:8]}") as ws:
        response = publish(server, f"bearer {API_KEY}", {"text": "announcement"})
        assert response.status_code == 202, response.text
        event, _ = await recv_until(ws, of_type("message", text="announcement"))
        assert (event["from"], event["id"]) == ("api", response.json()["id"])


def test_api_is_off_without_a_key() -> None:
    with start_gateway({}) as server:
        assert publish(server, f"Bearer {API_KEY}").status_code == 404
        assert publish(server, "Bearer anything").status_code == 404
