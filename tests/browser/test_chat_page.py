"""The chat page at `/`, used by people in a real (headless) Chromium against the real server.

Synchronisation is by Playwright's auto-retrying `expect` with timeouts, never by sleeping.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from websockets.sync.client import connect as ws_connect

from tests.support.servers import scaled, start_gateway

from .helpers import ARTIFACTS, REPO, OpenChat

pytestmark = pytest.mark.browser

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page, WebSocketRoute

with contextlib.suppress(ImportError):  # without playwright the fixtures skip (fail in CI)
    from playwright.sync_api import expect

# How long a page may take to come back after a restart: the drain hint, the new server's start,
# and a few backoff rounds while it was down.
RECONNECT_TIMEOUT_MS = int(scaled(45) * 1000)


def log(page: Page, room: str) -> Locator:
    return page.locator(f'.log[data-room="{room}"]')


def texts(page: Page, room: str, text: str) -> Locator:
    """The room messages on `page` whose text is exactly `text`."""
    pattern = re.compile(rf"^{re.escape(text)}$")
    return log(page, room).locator(".msg .text", has_text=pattern)


def direct_texts(page: Page, text: str) -> Locator:
    pattern = re.compile(rf"^{re.escape(text)}$")
    return page.locator('.log[data-view="direct"] .msg.direct .text', has_text=pattern)


def online(page: Page, user: str) -> Locator:
    pattern = re.compile(rf"^{re.escape(user)}( \(you\))?$")
    return page.locator("#online li.user", has_text=pattern)


def show_room(page: Page, room: str) -> None:
    page.locator(f'#rooms button[data-room="{room}"]').click()
    expect(page.locator("#view-title")).to_have_text(room)


def say(page: Page, text: str) -> None:
    page.locator("#text").fill(text)
    page.locator("#send").click()
    expect(page.locator("#text")).to_have_value("")


def join(page: Page, room: str) -> None:
    page.locator("#room-input").fill(room)
    page.locator("#join button").click()
    expect(page.locator("#view-title")).to_have_text(room)


def save_screenshot(page: Page) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "chat-page.png"
    page.screenshot(path=str(path))
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copyfile(path, REPO / "docs" / "chat-page.png")
    return path


def test_two_people_chat_in_rooms_and_directly(open_chat: OpenChat) -> None:
    with start_gateway() as gateway:
        alice = open_chat(gateway.base_url, "alice")
        bob = open_chat(gateway.base_url, "bob")
        a, b = alice.page, bob.page

        # The lobby, and who is online in it.
        expect(a.locator("#view-title")).to_have_text("lobby")
        expect(online(a, "bob")).to_have_count(1)
        expect(online(a, "alice")).to_have_text("alice (you)")
        expect(online(b, "alice")).to_have_count(1)
        expect(a.locator("#me")).to_have_text("alice")

        # Both ways in the lobby.
        say(a, "hello bob")
        expect(texts(b, "lobby", "hello bob")).to_have_count(1)
        expect(log(b, "lobby").locator(".msg").last.locator(".from")).to_have_text("alice")
        say(b, "hi alice — <3 & ünïcödé ✓")
        expect(texts(a, "lobby", "hi alice — <3 & ünïcödé ✓")).to_have_count(1)
        expect(texts(a, "lobby", "hello bob")).to_have_count(1)

        # Another room: its messages stay in it.
        join(a, "ops")
        join(b, "ops")
        expect(online(a, "bob")).to_have_count(1)
        say(b, "deploy at five")
        expect(texts(a, "ops", "deploy at five")).to_have_count(1)
        expect(texts(a, "lobby", "deploy at five")).to_have_count(0)
        show_room(a, "lobby")
        say(b, "ops only, unread by alice")
        expect(a.locator('#rooms button[data-room="ops"] .unread')).to_have_text("1")

        # A direct message, picked from the online list, and the answer.
        show_room(b, "lobby")
        online(b, "alice").click()
        expect(b.locator("#view-title")).to_have_text("Direct messages")
        expect(b.locator("#dm-to")).to_have_value("alice")
        say(b, "psst, alice")
        expect(a.locator("#direct-tab .unread")).to_have_text("1")
        a.locator("#direct-tab").click()
        expect(direct_texts(a, "psst, alice")).to_have_count(1)
        a.locator("#dm-to").fill("bob")
        say(a, "got it")
        expect(direct_texts(b, "got it")).to_have_count(1)
        expect(direct_texts(b, "psst, alice")).to_have_count(1)  # shown once, echo or not
        expect(direct_texts(a, "got it")).to_have_count(1)

        say(b, "see you")  # bob is still in the direct view: goes to alice directly
        expect(direct_texts(a, "see you")).to_have_count(1)
        show_room(b, "lobby")
        say(b, "bye all")
        show_room(a, "lobby")
        expect(texts(a, "lobby", "bye all")).to_have_count(1)
        expect(a.locator("#status")).to_have_text("connected")
        path = save_screenshot(a)
        assert path.stat().st_size > 10_000

        # Presence: bob closes his page, alice sees him go.
        bob.close()
        expect(online(a, "bob")).to_have_count(0)
        expect(online(a, "alice")).to_have_count(1)
        pattern = re.compile(r"^bob left lobby$")
        expect(log(a, "lobby").locator(".notice", has_text=pattern)).to_have_count(1)

        # A late arrival sees the lobby's recent history, once and in order.
        carol = open_chat(gateway.base_url, "carol")
        history = ["hello bob", "hi alice — <3 & ünïcödé ✓", "bye all"]
        expect(log(carol.page, "lobby").locator(".msg .text")).to_have_text(history)
        expect(online(a, "carol")).to_have_count(1)


def test_dropped_page_honours_the_hint_and_resumes_what_it_missed(open_chat: OpenChat) -> None:
    """The page's own connection drops (the server stays up): nothing missed, nothing twice."""
    sockets: list[tuple[WebSocketRoute, WebSocketRoute]] = []
    opened_at: list[float] = []
    sent_by_page: list[dict[str, object]] = []
    sent_to_page: list[str] = []

    def proxy(route: WebSocketRoute) -> None:
        server = route.connect_to_server()
        opened_at.append(time.monotonic())
        sockets.append((route, server))

        def forward(message: str | bytes) -> None:
            if isinstance(message, str):
                sent_by_page.append(json.loads(message))
            server.send(message)

        def backward(message: str | bytes) -> None:
            if isinstance(message, str):
                sent_to_page.append(message)
            route.send(message)

        route.on_message(forward)
        server.on_message(backward)

    with start_gateway() as gateway:
        alice = open_chat(
            gateway.base_url, "alice", lambda page: page.route_web_socket("**/ws/**", proxy)
        )
        bob = open_chat(gateway.base_url, "bob")
        a, b = alice.page, bob.page
        join(a, "ops")
        join(b, "ops")
        say(b, "ops before the drop")
        show_room(b, "lobby")
        for text in ("one before the drop", "two before the drop"):
            say(b, text)
            expect(texts(a, "lobby", text)).to_have_count(1)
        last_id = log(a, "lobby").locator(".msg").last.get_attribute("data-id")
        show_room(a, "lobby")

        # Drop alice's connection with a 3 s reconnect hint, as a draining server would.
        dropped_at = time.monotonic()
        route, server = sockets[-1]
        route.send(json.dumps({"type": "reconnect", "after_ms": 3000}))
        server.close()
        route.close(code=1012, reason="test: drop")
        expect(a.locator("#status")).to_have_text(re.compile(r"^reconnecting in \d+s$"))

        missed = ["three, while alice is away", "four, while alice is away"]
        for text in missed:
            say(b, text)
            expect(texts(b, "lobby", text)).to_have_count(1)
        show_room(b, "ops")
        say(b, "ops, while alice is away")

        expect(a.locator("#status")).to_have_text("connected", timeout=RECONNECT_TIMEOUT_MS)
        assert len(opened_at) == 2, f"expected one reconnect, saw {len(opened_at) - 1}"
        assert opened_at[1] - dropped_at >= 3.0, "the page came back before the server's hint"
        resumes = [m for m in sent_by_page if m.get("type") == "resume" and m["room"] == "lobby"]
        assert resumes, "the page did not ask to resume the lobby"
        assert resumes[-1]["after"] == last_id, resumes

        # Frames the page has already shown, again and batched in one frame: shown once still.
        before = {"one before the drop", "two before the drop"}
        lines = [line for frame in sent_to_page for line in frame.split("\n") if line.strip()]
        shown = [line for line in lines if json.loads(line).get("text") in before]
        assert len(shown) >= 2, sent_to_page
        sockets[-1][0].send("\n".join(shown[:2]))

        show_room(b, "lobby")
        say(b, "five, after alice is back")
        lobby = ["one before the drop", "two before the drop", *missed, "five, after alice is back"]
        expect(texts(a, "lobby", lobby[-1])).to_have_count(1)
        assert log(a, "lobby").locator(".msg .text").all_inner_texts() == lobby
        expect(texts(a, "ops", "ops, while alice is away")).to_have_count(1)
        ops_texts = log(a, "ops").locator(".msg .text").all_inner_texts()
        assert ops_texts == ["ops before the drop", "ops, while alice is away"]
        expect(a.locator('#rooms button[data-room="ops"] .unread')).to_have_text("1")


def test_a_name_in_use_is_refused_and_the_page_stays_offline(open_chat: OpenChat) -> None:
    """Close 1008 (policy) on a page that never had a session: offline with the reason, no retry."""
    attempts: list[str] = []
    with start_gateway() as gateway:
        open_chat(gateway.base_url, "alice")
        second = open_chat(
            gateway.base_url,
            "alice",
            lambda page: page.on("websocket", lambda ws: attempts.append(ws.url)),
            status="offline",
        )
        page = second.page
        expect(page.locator("#status-reason")).to_contain_text("already connected")
        expect(page.locator("#reconnect")).to_be_visible()
        expect(log(page, "lobby").locator(".notice.error")).to_contain_text("1008")
        # "offline", not "reconnecting in Ns": the page planned no retry when it closed.
        assert len(attempts) == 1, attempts


HOSTILE_NAME = '<img src=x onerror="window.__pwned=1">'
HOSTILE_TEXT = (
    '<script>window.__pwned=2</script><b>not bold</b><img src=x onerror="window.__pwned=3">'
)


def test_hostile_names_and_texts_render_as_text(open_chat: OpenChat) -> None:
    with start_gateway() as gateway:
        victim = open_chat(gateway.base_url, "victim")
        mallory = open_chat(gateway.base_url, HOSTILE_NAME)
        v, m = victim.page, mallory.page

        expect(m.locator("#me")).to_have_text(HOSTILE_NAME)
        expect(online(v, HOSTILE_NAME)).to_have_count(1)
        expect(log(v, "lobby").locator(".notice", has_text=HOSTILE_NAME)).to_have_count(1)

        say(m, HOSTILE_TEXT)
        for page in (v, m):
            expect(texts(page, "lobby", HOSTILE_TEXT)).to_have_count(1)
            last = log(page, "lobby").locator(".msg").last
            expect(last.locator(".from")).to_have_text(HOSTILE_NAME)

        online(m, "victim").click()
        say(m, HOSTILE_TEXT)
        v.locator("#direct-tab").click()
        expect(direct_texts(v, HOSTILE_TEXT)).to_have_count(1)
        expect(v.locator(".msg.direct .from")).to_have_text(f"{HOSTILE_NAME} → victim")

        for page in (v, m):
            assert page.evaluate("() => window.__pwned") is None
            assert page.locator("#chat img, #chat script, #chat b, header img").count() == 0


def test_restart_both_pages_reconnect_and_show_every_message_once(open_chat: OpenChat) -> None:
    env = {"GATEWAY_DRAIN_TIMEOUT": "5"}
    lobby: list[str] = []
    ops: list[str] = []

    def post(page: Page, room: str, text: str) -> None:
        if page.locator("#view-title").inner_text() != room:
            show_room(page, room)
        say(page, text)
        expect(texts(page, room, text)).to_have_count(1)  # in the room's order before the next
        (lobby if room == "lobby" else ops).append(text)

    with start_gateway(env=env) as first:
        port = first.port
        alice = open_chat(first.base_url, "alice")
        bob = open_chat(first.base_url, "bob")
        a, b = alice.page, bob.page
        join(a, "ops")
        join(b, "ops")
        post(a, "lobby", "alice before the restart")
        post(b, "lobby", "bob before the restart")
        post(a, "lobby", "alice again before")
        post(b, "ops", "ops before the restart")
        for page in (a, b):
            for text in lobby:
                expect(texts(page, "lobby", text)).to_have_count(1)
            expect(texts(page, "ops", ops[0])).to_have_count(1)

        first.stop()  # SIGTERM: the server drains (reconnect hint, close 1012) and exits
        for page in (a, b):
            expect(page.locator("#status")).to_have_text(re.compile(r"^reconnecting in \d+s$"))

    with start_gateway(env=env, port=port) as second:
        # Carol posts as soon as the new server is up: the pages may be back or still waiting.
        carol_text = "carol, while the pages were away"
        post_as_carol(second.ws_url("/ws/carol"), carol_text)
        lobby.append(carol_text)

        for page in (a, b):
            expect(page.locator("#status")).to_have_text("connected", timeout=RECONNECT_TIMEOUT_MS)
            expect(page.locator("#status-reason")).to_have_text("")

        post(a, "lobby", "alice after the restart")
        post(b, "lobby", "bob after the restart")
        post(a, "ops", "ops after the restart")

        # A last message from each page, seen on both: everything replayed or sent before it on
        # the same connections has arrived by then, so duplicates would be visible now.
        post(a, "lobby", "alice's last")
        post(b, "lobby", "bob's last")
        for page in (a, b):
            expect(texts(page, "lobby", "alice's last")).to_have_count(1)
            expect(texts(page, "lobby", "bob's last")).to_have_count(1)
            expect(texts(page, "ops", "ops after the restart")).to_have_count(1)

        for page in (a, b):
            for room, sent in (("lobby", lobby), ("ops", ops)):
                for text in sent:
                    expect(texts(page, room, text)).to_have_count(1)
                expect(log(page, room).locator(".msg")).to_have_count(len(sent))
                shown = log(page, room).locator(".msg .text").all_inner_texts()
                assert shown == sent, f"{room} on a page shows {shown}, sent {sent}"


def post_as_carol(url: str, text: str) -> None:
    """Sends one lobby message from a plain WebSocket client and waits for the server's echo."""
    deadline = time.monotonic() + 15
    with ws_connect(url, open_timeout=10) as carol:
        carol.send(json.dumps({"type": "message", "room": "lobby", "text": text}))
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "carol's message was not echoed"
            frame = carol.recv(timeout=remaining)
            for line in str(frame).splitlines():
                event = json.loads(line) if line.strip() else {}
                if event.get("type") == "error":
                    pytest.fail(f"carol's message was refused: {event}")
                if event.get("type") == "message" and event.get("text") == text:
                    return
