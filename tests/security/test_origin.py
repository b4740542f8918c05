"""Cross-site WebSocket hijacking: a page of another site must not reach the chat through the
visitor's browser. Browsers always send ``Origin`` on a WebSocket handshake."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.security.helpers import REFUSED, bystander, chat_once, refused, unique
from tests.support.clients import of_type, open_ws, recv_until
from tests.support.metrics import metric
from tests.support.servers import GatewayProcess, start_gateway


@pytest.fixture(scope="module")
def same_host() -> Iterator[GatewayProcess]:
    """The default: no allowlist, so only the page the gateway itself serves may connect."""
    with start_gateway({"GATEWAY_RATE_LIMIT": "0"}) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def allowlist() -> Iterator[GatewayProcess]:
    env = {
        "GATEWAY_ALLOWED_ORIGINS": "https://chat.example, http://localhost:3000",
        "GATEWAY_ALLOW_NO_ORIGIN": "false",
        "GATEWAY_RATE_LIMIT": "0",
    }
    with start_gateway(env) as gateway:
        yield gateway


async def accepted(server: GatewayProcess, origin: str | None) -> None:
    ws = await open_ws(server.ws_url(unique("accepted")), origin=origin)
    await recv_until(ws, of_type("joined"))
    await chat_once(ws)
    await ws.close()


@pytest.mark.parametrize(
    "origin",
    ["http://127.0.0.1:{port}", "HTTP://127.0.0.1:{port}", None],
    ids=["same-host", "same-host-uppercase-scheme", "no-origin-non-browser"],
)
async def test_same_host_and_non_browser_clients_are_accepted(
    same_host: GatewayProcess, origin: str | None
) -> None:
    await accepted(same_host, origin.format(port=same_host.port) if origin else None)


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "http://127.0.0.1:1",
        "http://127.0.0.1.evil.example:{port}",
        "null",
        "file://",
        "garbage",
    ],
    ids=["other-site", "other-port", "suffix", "null", "file", "garbage"],
)
async def test_cross_site_origin_is_refused_with_403(
    same_host: GatewayProcess, origin: str
) -> None:
    async with bystander(same_host, unique("bystander")):
        before = metric(same_host.base_url, REFUSED, reason="origin")
        status, body, _ = await refused(
            same_host.ws_url(unique("victim")), origin=origin.format(port=same_host.port)
        )
        assert (status, body) == (403, "origin not allowed")
        assert metric(same_host.base_url, REFUSED, reason="origin") == before + 1


async def test_allowlist_replaces_same_host(allowlist: GatewayProcess) -> None:
    await accepted(allowlist, "https://chat.example")
    await accepted(allowlist, "https://CHAT.example:443")
    await accepted(allowlist, "http://localhost:3000")
    for origin in (f"http://127.0.0.1:{allowlist.port}", "https://chat.example:8443", None):
        status, _, _ = await refused(allowlist.ws_url(unique("refused")), origin=origin)
        assert status == 403, origin


def test_origin_check_leaves_plain_http_alone(allowlist: GatewayProcess) -> None:
    response = httpx.get(allowlist.base_url + "/healthz", headers={"Origin": "http://evil.example"})
    assert response.status_code == 200
