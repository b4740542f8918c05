"""SPEC "Hardening", HTTP: every answer carries the page's protections, nothing is loaded from
elsewhere, the API docs are off unless asked for, presence needs credentials when auth is on,
and a message published through the API says so."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser

import httpx
import jwt
import pytest

from tests.security.helpers import OTHER_SECRET, SECRET, bystander, claims, refused, sign, token
from tests.support.clients import of_type, recv_until
from tests.support.servers import GatewayProcess, scaled, start_gateway

API_KEY = "surface-key-" + "k" * 32
OWN_ORIGIN = {"'self'", "'none'"}


@pytest.fixture(scope="module")
def server() -> Iterator[GatewayProcess]:
    with start_gateway({"GATEWAY_API_KEY": API_KEY, "GATEWAY_RATE_LIMIT": "0"}) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def authed() -> Iterator[GatewayProcess]:
    env = {"GATEWAY_API_KEY": API_KEY, "GATEWAY_AUTH_SECRET": SECRET}
    with start_gateway(env) as gateway:
        yield gateway


def policy(response: httpx.Response) -> dict[str, list[str]]:
    header = response.headers.get("content-security-policy", "")
    directives = (part.split() for part in header.split(";") if part.strip())
    return {words[0]: words[1:] for words in directives}


def pinned(directive: str, csp: dict[str, list[str]]) -> set[str]:
    """Inline styles admitted by their SHA-256 (ReDoc's): exactly that text, from nowhere else."""
    return {
        s for s in csp.get(directive, []) if directive == "style-src" and s.startswith("'sha256-")
    }


def assert_protected(response: httpx.Response) -> None:
    where = f"{response.request.method} {response.request.url.path} ({response.status_code})"
    csp = policy(response)
    assert csp, f"{where}: no Content-Security-Policy"
    assert csp.get("frame-ancestors") == ["'none'"], where
    assert csp.get("default-src") == ["'self'"], where
    for directive in ("script-src", "style-src", "connect-src"):
        sources = set(csp.get(directive, csp["default-src"])) - pinned(directive, csp)
        assert sources <= OWN_ORIGIN, f"{where}: {directive} allows {sources - OWN_ORIGIN}"
    for directive, listed in csp.items():
        outside = set(listed) - OWN_ORIGIN - pinned(directive, csp) - {"data:"}
        assert not outside, f"{where}: {directive} allows {outside}"
    assert response.headers.get("x-content-type-options") == "nosniff", where
    assert response.headers.get("referrer-policy") == "no-referrer", where


def test_every_answer_carries_the_security_headers(server: GatewayProcess) -> None:
    bearer = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=server.base_url, timeout=scaled(5)) as client:
        answers = [
            (client.get("/"), 200),
            (client.get("/healthz"), 200),
            (client.get("/readyz"), 200),
            (client.get("/metrics"), 200),
            (client.get("/static/chat.js"), 200),
            (client.get("/static/chat.css"), 200),
            (client.get("/static/nothing-here.js"), 404),
            (client.get("/nothing-here"), 404),
            (client.post("/healthz"), 405),
            (client.get("/api/rooms/lobby/presence"), 200),
            (client.get("/api/rooms/no%20such%20room/presence"), 404),
            (client.post("/api/rooms/lobby/messages", json={"text": "x"}), 401),
            (client.post("/api/rooms/lobby/messages", content=b"{", headers=bearer), 422),
            (client.post("/api/rooms/lobby/messages", content=b"x" * 70_000, headers=bearer), 413),
        ]
    for response, status in answers:
        assert response.status_code == status, (response.request.url, response.text)
        assert_protected(response)


async def test_a_refused_websocket_handshake_carries_them_too(server: GatewayProcess) -> None:
    status, _, headers = await refused(server.ws_url("/ws/mallory"), origin="http://evil.example")
    assert status == 403
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


class Page(HTMLParser):
    """What a page would load, and whether it carries inline script or style."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        self.urls += [value for name, value in attrs if name in {"src", "href"} and value]
        if "style" in named or any(name.startswith("on") for name in named):
            self.inline.append(f"<{tag}> attribute")
        if tag == "style":
            self.inline.append("<style>")
        self._in_script = tag == "script" and "src" not in named

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("inline <script>")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


def check_page(server: GatewayProcess, path: str) -> list[str]:
    """The page's own URLs, each of which must be this server's and served with the headers."""
    page = Page()
    response = server.get(path)
    assert_protected(response)
    page.feed(response.text)
    assert not page.inline, f"{path}: {page.inline} (the policy refuses inline code)"
    assert page.urls, f"{path} loads nothing?"
    for url in page.urls:
        assert url.startswith("/") or url == "data:,", f"{path} loads {url} from elsewhere"
        if url.startswith("/"):
            response = server.get(url)
            assert response.status_code == 200, url
            assert_protected(response)
    return page.urls


def test_the_chat_page_loads_only_its_own_files(server: GatewayProcess) -> None:
    urls = check_page(server, "/")
    assert {"/static/chat.js", "/static/chat.css"} <= set(urls)
    for url in ("/static/chat.js", "/static/protocol.js", "/static/render.js", "/static/chat.css"):
        text = server.get(url).text
        assert not re.search(r"https?://", text), f"{url} names another origin"
        assert "@import" not in text, url


@pytest.mark.parametrize(
    "path", ["/docs", "/redoc", "/openapi.json", "/docs-assets/swagger-ui-bundle.js"]
)
def test_api_docs_are_off_by_default(server: GatewayProcess, path: str) -> None:
    response = server.get(path)
    assert response.status_code == 404
    assert_protected(response)


def test_api_docs_when_on_are_served_from_the_gateway_itself() -> None:
    with start_gateway({"GATEWAY_API_DOCS": "true"}) as gateway:
        assert "/api/rooms/{room}/messages" in gateway.get("/openapi.json").json()["paths"]
        swagger = check_page(gateway, "/docs")
        redoc = check_page(gateway, "/redoc")
    assert "/docs-assets/swagger-ui-bundle.js" in swagger
    assert "/docs-assets/redoc.standalone.js" in redoc


def presence(server: GatewayProcess, room: str, authorization: str | None) -> int:
    headers = {} if authorization is None else {"Authorization": authorization}
    return server.get(f"/api/rooms/{room}/presence", headers=headers).status_code


def test_presence_with_auth_on_needs_the_key_or_a_token_for_the_room(
    authed: GatewayProcess,
) -> None:
    expired = jwt.encode({"sub": "eve", "exp": int(time.time()) - 600}, SECRET, algorithm="HS256")
    ops_only = token("dana", rooms=["ops"])
    refused = [
        ("lobby", None),
        ("lobby", ""),
        ("lobby", "Bearer"),
        ("lobby", "Bearer not-a-token"),
        ("lobby", f"Bearer {expired}"),
        ("lobby", f"Bearer {sign(claims('eve'), key=OTHER_SECRET)}"),
        ("lobby", f"Basic {token('eve')}"),
        ("lobby", f"Bearer {API_KEY}x"),
        ("secret", f"Bearer {ops_only}"),
    ]
    for room, authorization in refused:
        assert presence(authed, room, authorization) == 401, (room, authorization)
    admitted = [
        ("ops", f"Bearer {ops_only}"),
        ("lobby", f"Bearer {ops_only}"),
        ("secret", f"bearer {token('frank')}"),
        ("secret", f"Bearer {API_KEY}"),
    ]
    for room, authorization in admitted:
        assert presence(authed, room, authorization) == 200, (room, authorization)


def test_presence_without_auth_stays_open(server: GatewayProcess) -> None:
    assert presence(server, "lobby", None) == 200


async def test_an_api_message_says_where_it_came_from(server: GatewayProcess) -> None:
    text = f"announcement {uuid.uuid4().hex[:8]}"
    spoof = f"spoof {uuid.uuid4().hex[:8]}"
    async with bystander(server, f"/ws/reader-{uuid.uuid4().hex[:8]}") as ws:
        response = httpx.post(
            f"{server.base_url}/api/rooms/lobby/messages",
            json={"text": text},
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=scaled(5),
        )
        assert response.status_code == 202, response.text
        event, _ = await recv_until(ws, of_type("message", text=text))
        assert event["source"] == "api"
        await ws.send(json.dumps({"type": "message", "text": spoof, "source": "api"}))
        own, _ = await recv_until(ws, of_type("message", text=spoof))
        assert "source" not in own, "a user's message must not pass for the API's"
