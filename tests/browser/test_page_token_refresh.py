"""The chat page renews its token before it expires, against a real `gateway serve` with auth on.

The page is opened with a short-lived token (`?token=`) and a token URL (`?token_url=/token`);
Playwright answers that URL with tokens minted by `gateway.auth.mint`, as an app's own backend
would. With GATEWAY_AUTH_LEEWAY=0 the server closes a connection the moment its token runs out,
so a page still connected, on its first socket, after several lifetimes has renewed in time.
Waits are on frames and on Playwright's auto-retrying `expect`, with deadlines, never sleeps.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from gateway.auth import mint
from tests.support.servers import scaled, start_gateway

from .helpers import TIMEOUT_MS, OpenChat

pytestmark = pytest.mark.browser

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page, Route, WebSocket

with contextlib.suppress(ImportError):  # without playwright the fixtures skip (fail in CI)
    from playwright.sync_api import expect

SECRET = "page-token-refresh-secret-of-32-bytes-at-least"
TTL = 4  # seconds: a token the page must renew within the test
ENV = {"GATEWAY_AUTH_SECRET": SECRET, "GATEWAY_AUTH_LEEWAY": "0"}


def exp_of(token: str) -> int:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return int(claims["exp"])


def lobby(page: Page) -> Locator:
    return page.locator('.log[data-room="lobby"]')


class TokenEndpoint:
    """`GET /token` on the page's origin, answered by Playwright: a fresh token for `sub`."""

    def __init__(self, sub: str) -> None:
        self.sub = sub
        self.served: list[str] = []

    def attach(self, page: Page) -> None:
        page.route(lambda url: urlsplit(url).path == "/token", self.answer)

    def answer(self, route: Route) -> None:
        assert route.request.method == "GET"
        token = mint(SECRET, self.sub, ttl=TTL)
        self.served.append(token)
        route.fulfill(json={"token": token}, headers={"Cache-Control": "no-store"})


class Socket:
    """The page's WebSockets, and the events of the frames they received."""

    def __init__(self) -> None:
        self.opened: list[WebSocket] = []
        self.events: list[dict[str, object]] = []

    def attach(self, page: Page) -> None:
        def on_socket(ws: WebSocket) -> None:
            self.opened.append(ws)
            ws.on("framereceived", self.on_frame)

        page.on("websocket", on_socket)

    def on_frame(self, payload: str | bytes) -> None:
        for line in str(payload).splitlines():
            if line.strip():
                self.events.append(json.loads(line))

    def of_type(self, kind: str) -> list[dict[str, object]]:
        return [event for event in self.events if event.get("type") == kind]

    def wait_for(self, kind: str, count: int) -> None:
        """Until `count` events of `kind` came, frame by frame (Playwright pumps its events
        while it waits), within a deadline."""
        deadline = time.monotonic() + scaled(30)
        for _ in range(10_000):
            if len(self.of_type(kind)) >= count:
                return
            remaining_ms = (deadline - time.monotonic()) * 1000
            assert remaining_ms > 0, f"{count} {kind!r} expected, got {self.events}"
            with self.opened[-1].expect_event("framereceived", timeout=remaining_ms):
                pass
        raise AssertionError(f"{count} {kind!r} expected, got {self.events}")


def say(page: Page, text: str) -> None:
    page.locator("#text").fill(text)
    page.locator("#send").click()
    expect(page.locator("#text")).to_have_value("")
    expect(lobby(page).locator(".msg .text", has_text=re.compile(f"^{text}$"))).to_have_count(1)


@contextlib.contextmanager
def alice_renewing(
    open_chat: OpenChat, endpoint: TokenEndpoint, sockets: Socket
) -> Iterator[tuple[Page, str]]:
    """A gateway with auth on and alice's page on it, opened with a token that runs out within
    the test and the token URL that ``endpoint`` answers; yields the page and that first token."""

    def setup(page: Page) -> None:
        endpoint.attach(page)
        sockets.attach(page)

    with start_gateway(env=ENV) as gateway:
        first = mint(SECRET, "alice", ttl=TTL)
        chat = open_chat(gateway.base_url, "alice", setup, path=f"/?token={first}&token_url=/token")
        yield chat.page, first


def test_page_renews_its_token_and_outlives_the_first_one(open_chat: OpenChat) -> None:
    endpoint = TokenEndpoint("alice")
    sockets = Socket()
    with alice_renewing(open_chat, endpoint, sockets) as (page, first):
        say(page, "with the first token")

        # Three renewals: each `refreshed` carries the new token's exp, later than the last.
        sockets.wait_for("refreshed", 3)
        assert len(endpoint.served) >= 3
        exps = [int(str(event["exp"])) for event in sockets.of_type("refreshed")]
        assert exps == sorted(exps), exps
        assert exps[0] > exp_of(first), exps
        served = {exp_of(token) for token in endpoint.served}
        assert set(exps) <= served, (exps, served)
        assert time.time() > exp_of(first) + 1, "the first token has run out by now"

        # Still the first socket, still connected, and it still carries messages.
        say(page, "after the first token ran out")
        expect(page.locator("#status")).to_have_text("connected")
        assert len(sockets.opened) == 1, [ws.url for ws in sockets.opened]
        assert sockets.opened[0].is_closed() is False
        expect(lobby(page).locator(".notice.error")).to_have_count(0)
        expect(lobby(page).locator(".notice", has_text="connection lost")).to_have_count(0)


def test_a_renewal_the_server_refuses_is_shown_and_the_old_expiry_stands(
    open_chat: OpenChat,
) -> None:
    """The token URL hands out tokens for someone else: the server answers `forbidden`, the page
    says so, and the connection closes at the first token's expiry. "Reconnect now" then gets a
    token from the URL before it connects."""
    endpoint = TokenEndpoint("mallory")
    sockets = Socket()
    with alice_renewing(open_chat, endpoint, sockets) as (page, first):
        notices = lobby(page).locator(".notice.error", has_text="token was not renewed")
        expect(notices.first).to_contain_text("forbidden: the token is for another user")
        expect(page.locator("#status")).to_have_text("offline", timeout=TIMEOUT_MS)
        expect(page.locator("#status-reason")).to_contain_text("token expired")
        assert not sockets.of_type("refreshed")
        assert time.time() >= exp_of(first), "closed at the old expiry, not before"

        # The way back: a fresh token for alice from the URL, fetched before connecting.
        endpoint.sub = "alice"
        page.locator("#reconnect").click()
        expect(page.locator("#status")).to_have_text("connected")
        assert len(sockets.opened) == 2, (
            [ws.url[-20:] for ws in sockets.opened],
            sockets.events,
            lobby(page).inner_text(),
        )
        assert "token=" in sockets.opened[1].url
        assert first not in sockets.opened[1].url
