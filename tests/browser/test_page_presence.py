"""Who is online on the chat page when presence comes batched: `diff` events (several changes
in one window) and `count` events (a room over the names limit), against a real `gateway serve`.

Raw WebSocket clients join the lobby quickly, within one presence window, so the server sends the
page a `diff`; more of them push the room over GATEWAY_PRESENCE_NAMES_MAX and it sends `count`.
The test reads the frames the page received and checks the page shows what they said.
Synchronisation is by Playwright's auto-retrying `expect`, never by sleeping.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import TYPE_CHECKING, Any

import pytest
from websockets.sync.client import connect as ws_connect

from tests.support.servers import start_gateway

from .helpers import OpenChat

pytestmark = pytest.mark.browser

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page, WebSocket

with contextlib.suppress(ImportError):  # without playwright the fixtures skip (fail in CI)
    from playwright.sync_api import expect

NAMES_MAX = 4
# A wide window, so the quick joins of the test land in one even on a slow machine.
ENV = {"GATEWAY_PRESENCE_NAMES_MAX": str(NAMES_MAX), "GATEWAY_PRESENCE_BATCH_MS": "1500"}


def users(page: Page) -> Locator:
    return page.locator("#online li.user")


def presence_log(page: Page) -> Locator:
    return page.locator('.log[data-room="lobby"] .notice.presence')


def name_list(names: list[str]) -> str:
    """The page's way of listing up to three names: "a", "a and b", "a, b and c"."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


class Frames:
    """The presence events of the lobby the page received on its WebSocket."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def attach(self, page: Page) -> None:
        def on_socket(ws: WebSocket) -> None:
            ws.on("framereceived", lambda payload: self.lines.extend(str(payload).splitlines()))

        page.on("websocket", on_socket)

    def presence(self, kind: str) -> list[dict[str, Any]]:
        events = [json.loads(line) for line in self.lines if line.strip()]
        return [
            event
            for event in events
            if event.get("type") == "presence"
            and event.get("room") == "lobby"
            and event.get("event") == kind
        ]


def test_page_shows_a_diff_and_then_a_count_for_a_room_too_large_to_list(
    open_chat: OpenChat,
) -> None:
    frames = Frames()
    with start_gateway(env=ENV) as gateway, contextlib.ExitStack() as clients:
        alice = open_chat(gateway.base_url, "alice", frames.attach)
        a = alice.page
        expect(a.locator("#online-count")).to_have_text("(1)")
        sockets = {}

        def arrive(*names: str) -> None:
            for name in names:
                url = gateway.ws_url(f"/ws/{name}")
                sockets[name] = clients.enter_context(ws_connect(url, open_timeout=10))

        # Three arrivals within one window: the page hears (at most) one at once, then a diff.
        arrive("u1", "u2", "u3")
        expect(a.locator("#online-count")).to_have_text("(4)")
        expect(users(a)).to_have_text(["alice (you)", "u1", "u2", "u3"])
        expect(a.locator("#online-partial")).to_be_hidden()
        diffs = frames.presence("diff")
        assert diffs, f"no diff reached the page: {frames.lines}"
        diff = diffs[0]
        assert diff["left"] == [], diff
        assert diff["online"] == 4, diff
        assert 2 <= len(diff["joined"]) <= 3, diff
        line = f"{name_list(diff['joined'])} joined lobby"
        expect(presence_log(a).filter(has_text=re.compile(f"^{re.escape(line)}$"))).to_have_count(1)

        # Two leave: however the window splits them, the list and the count follow.
        sockets.pop("u1").close()
        sockets.pop("u2").close()
        expect(a.locator("#online-count")).to_have_text("(2)")
        expect(users(a)).to_have_text(["alice (you)", "u3"])

        # Over the names limit: count events, no names. The page shows the count and says the
        # list is partial instead of a list that may name people who are gone.
        arrive("u4", "u5", "u6", "u7")
        expect(a.locator("#online-count")).to_have_text("(6)")
        expect(a.locator("#online-partial")).to_be_visible()
        expect(a.locator("#online-partial")).to_have_text(
            "showing 1 of 6: too many to list everyone"
        )
        expect(users(a)).to_have_text(["alice (you)"])
        counts = frames.presence("count")
        assert counts, frames.lines
        assert counts[-1]["online"] == 6, counts
        assert not {"user", "joined", "left"} & set(counts[-1]), counts[-1]
        expect(presence_log(a).filter(has_text="u7")).to_have_count(0)  # no line per window

        # A page that arrives now gets a `joined` ack whose count exceeds its names.
        bob = open_chat(gateway.base_url, "bob")
        b = bob.page
        expect(b.locator("#online-count")).to_have_text("(7)")
        expect(b.locator("#online-partial")).to_have_text(
            re.compile(r"^showing [1-5] of 7: too many to list everyone$")
        )
        assert 1 <= users(b).count() <= NAMES_MAX + 1
        expect(users(b).filter(has_text="bob (you)")).to_have_count(1)
        expect(a.locator("#online-count")).to_have_text("(7)")

        # Back under the limit: named events again; the page lists whom it knows, still partial
        # until the names account for the whole count.
        for name in ("u4", "u5", "u6", "u7"):
            sockets.pop(name).close()
        expect(a.locator("#online-count")).to_have_text("(3)")
        expect(a.locator("#online-partial")).to_have_text(
            "showing 1 of 3: too many to list everyone"
        )
        expect(b.locator("#online-count")).to_have_text("(3)")
