"""Hooks against a real backend (tests/support/backend.py) and a real ``gateway serve``: every
decision, signature and payload, and a backend that hangs, errs or answers garbage under both
failure policies, with the connection staying usable."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.support.backend import Backend, start_backend
from tests.support.clients import EventReader, open_ws
from tests.support.metrics import metric
from tests.support.servers import GatewayProcess, scaled, start_gateway

API_KEY = "hooks-api-key-" + "k" * 24
TIMEOUT = 1.0


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    with start_backend() as running:
        yield running


def _env(backend: Backend, failure: str) -> dict[str, str]:
    return backend.gateway_env(
        hook_failure=failure,
        hook_timeout=str(TIMEOUT),
        api_key=API_KEY,
        rate_limit="0",
        command_rate_limit="0",
    )


@pytest.fixture(scope="module")
def closed(backend: Backend) -> Iterator[GatewayProcess]:
    with start_gateway(_env(backend, "closed")) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def open_(backend: Backend) -> Iterator[GatewayProcess]:
    with start_gateway(_env(backend, "open")) as gateway:
        yield gateway


@pytest.fixture(autouse=True)
def fresh(backend: Backend) -> None:
    backend.reset()


async def connect(server: GatewayProcess, user: str, query: str = "") -> EventReader:
    reader = EventReader(await open_ws(server.ws_url(f"/ws/{user}{query}")), user)
    await reader.until(lambda: reader.has("joined", room="lobby"), 5, "the lobby's joined")
    return reader


def hook_count(server: GatewayProcess, event: str, outcome: str) -> float:
    return metric(server.base_url, "gateway_hook_requests_total", event=event, outcome=outcome)


def refused_status(error: pytest.ExceptionInfo[InvalidStatus]) -> int:
    return int(error.value.response.status_code)


async def test_connect_is_signed_traced_and_carries_user_address_and_path(
    backend: Backend, closed: GatewayProcess
) -> None:
    before = metric(
        closed.base_url, "gateway_hook_requests_total", event="connect", outcome="allow"
    )
    alice = await connect(closed, "alice", "?format=json&token=secret-in-query")
    [request] = backend.requests("connect")
    assert request["signature_ok"]
    assert request["body"] == {"user": "alice", "remote_addr": "127.0.0.1", "path": "/ws/alice"}
    assert not backend.requests("join"), "the lobby a connection starts in asks no join hook"
    after = hook_count(closed, "connect", "allow")
    assert after == before + 1
    await alice.close()


async def test_a_denied_connect_is_http_403_with_the_reason(
    backend: Backend, closed: GatewayProcess
) -> None:
    backend.rules(connect={"action": "deny", "reason": "banned"})
    before = metric(closed.base_url, "gateway_connections_refused_total", reason="forbidden")
    with pytest.raises(InvalidStatus) as refused:
        await open_ws(closed.ws_url("/ws/mallory"))
    assert refused_status(refused) == 403
    assert b"banned" in refused.value.response.body
    after = metric(closed.base_url, "gateway_connections_refused_total", reason="forbidden")
    assert after == before + 1
    assert metric(closed.base_url, "gateway_hook_requests_total", event="connect", outcome="deny")


async def test_rooms_in_the_connect_answer_grant_rooms(
    backend: Backend, closed: GatewayProcess
) -> None:
    backend.rules(connect={"action": "allow", "rooms": ["team-*"]})
    bob = await connect(closed, "bob")
    await bob.send({"type": "join", "room": "team-a"})
    await bob.until(lambda: bob.has("joined", room="team-a"), 5, "joined team-a")
    await bob.send({"type": "join", "room": "elsewhere"})
    await bob.until(lambda: bob.has("error", code="forbidden"), 5, "forbidden elsewhere")
    await bob.close()


async def test_join_hook_decides_and_a_deny_is_forbidden(
    backend: Backend, closed: GatewayProcess
) -> None:
    backend.rules(join={"action": "deny", "reason": "members only"})
    carol = await connect(closed, "carol")
    await carol.send({"type": "join", "room": "vip"})
    await carol.until(lambda: carol.has("error", code="forbidden"), 5, "forbidden")
    assert next(e for e in carol.events if e.get("code") == "forbidden")["detail"] == "members only"
    assert not carol.has("joined", room="vip")
    [request] = backend.requests("join")
    assert request["body"] == {"user": "carol", "room": "vip"}
    await carol.close()


async def test_message_hook_may_replace_the_text_and_a_deny_publishes_nothing(
    backend: Backend, closed: GatewayProcess
) -> None:
    dave, erin = await connect(closed, "dave"), await connect(closed, "erin")
    backend.rules(message={"action": "allow", "text": "[redacted]"})
    await dave.send({"type": "message", "room": "lobby", "text": "my password is hunter2"})
    await erin.until(lambda: erin.has("message", text="[redacted]"), 5, "the replaced text")
    backend.rules(message={"action": "deny", "reason": "spam"})
    await dave.send({"type": "message", "room": "lobby", "text": "buy now"})
    await dave.until(lambda: dave.has("error", code="forbidden"), 5, "forbidden")
    backend.rules()
    await dave.send({"type": "message", "room": "lobby", "text": "sorry"})
    await erin.until(lambda: erin.has("message", text="sorry"), 5, "the next message")
    texts = [e["text"] for e in erin.events if e.get("type") == "message"]
    assert "buy now" not in texts
    assert "my password is hunter2" not in texts
    bodies = [r["body"] for r in backend.requests("message")]
    assert bodies[0] == {"user": "dave", "room": "lobby", "text": "my password is hunter2"}
    await dave.close()
    await erin.close()


async def test_the_publish_api_asks_no_message_hook(
    backend: Backend, closed: GatewayProcess
) -> None:
    backend.rules(message={"action": "deny"})
    answer = httpx.post(
        f"{closed.base_url}/api/rooms/lobby/messages",
        json={"text": "from the API"},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=scaled(5),
    )
    assert answer.status_code == 202
    assert not backend.requests("message")


FAILURES: list[tuple[str, dict[str, Any]]] = [
    ("hang", {"action": "hang"}),
    ("http-500", {"action": "raw", "status": 500, "body": "oops"}),
    ("not-json", {"action": "raw", "body": "<html>hello</html>"}),
    ("no-allow", {"action": "raw", "body": '{"ok": true}'}),
    ("allow-not-bool", {"action": "raw", "body": '{"allow": "yes"}'}),
    ("bad-rooms", {"action": "raw", "body": '{"allow": true, "rooms": "all"}'}),
    ("huge", {"action": "huge"}),
]


@pytest.mark.parametrize(("name", "rule"), FAILURES, ids=[name for name, _ in FAILURES])
async def test_a_failing_backend_refuses_connects_within_the_timeout_when_closed(
    backend: Backend, closed: GatewayProcess, name: str, rule: dict[str, Any]
) -> None:
    backend.rules(connect=rule)
    before = metric(closed.base_url, "gateway_connections_refused_total", reason="unavailable")
    started = time.monotonic()
    with pytest.raises(InvalidStatus) as refused:
        await open_ws(closed.ws_url(f"/ws/fail-{name}"))
    assert refused_status(refused) == 503
    assert time.monotonic() - started < TIMEOUT + scaled(1.5)
    after = metric(closed.base_url, "gateway_connections_refused_total", reason="unavailable")
    assert after == before + 1


@pytest.mark.parametrize(("name", "rule"), FAILURES[:4], ids=[n for n, _ in FAILURES[:4]])
async def test_a_failing_backend_answers_unavailable_and_the_connection_stays_usable(
    backend: Backend, closed: GatewayProcess, name: str, rule: dict[str, Any]
) -> None:
    frank, grace = await connect(closed, f"frank-{name}"), await connect(closed, f"grace-{name}")
    backend.rules(join=rule, message=rule)
    before = metric(
        closed.base_url, "gateway_hook_requests_total", event="message", outcome="error"
    )
    await frank.send({"type": "join", "room": "side"})
    await frank.until(lambda: frank.has("error", code="unavailable"), 5, "join unavailable")
    await frank.send({"type": "message", "room": "lobby", "text": "during the outage"})
    await frank.until(
        lambda: sum(e.get("code") == "unavailable" for e in frank.events) == 2, 5, "unavailable"
    )
    await frank.send({"type": "ping"})
    await frank.until(lambda: frank.has("pong"), 5, "a pong: the connection is still usable")
    backend.rules()
    await frank.send({"type": "message", "room": "lobby", "text": "after the outage"})
    await grace.until(lambda: grace.has("message", text="after the outage"), 5, "the message")
    assert not grace.has("message", text="during the outage")
    after = hook_count(closed, "message", "error")
    assert after == before + 1
    await frank.close()
    await grace.close()


async def test_a_hanging_backend_blocks_no_other_connection(
    backend: Backend, closed: GatewayProcess
) -> None:
    heidi, ivan = await connect(closed, "heidi"), await connect(closed, "ivan")
    backend.rules(join={"action": "hang"})
    await heidi.send({"type": "join", "room": "slow"})
    backend.wait_requests("join", 1)
    await ivan.send({"type": "ping"})
    await ivan.until(lambda: ivan.has("pong"), 5, "ivan's pong while heidi's join hangs")
    assert not heidi.has("error"), "ivan's pong waited for heidi's hook to time out"
    await heidi.until(lambda: heidi.has("error", code="unavailable"), 5, "heidi's unavailable")
    await heidi.close()
    await ivan.close()


async def test_with_open_a_failing_backend_allows(backend: Backend, open_: GatewayProcess) -> None:
    backend.rules(
        connect={"action": "hang"},
        join={"action": "raw", "status": 502},
        message={"action": "raw", "body": "garbage"},
    )
    judy = await connect(open_, "judy")
    await judy.send({"type": "join", "room": "anywhere"})
    await judy.until(lambda: judy.has("joined", room="anywhere"), 5, "joined anyway")
    await judy.send({"type": "message", "room": "anywhere", "text": "unchecked"})
    await judy.until(lambda: judy.has("message", text="unchecked"), 5, "published as sent")
    errors = metric(open_.base_url, "gateway_hook_requests_total", event="connect", outcome="error")
    assert errors >= 1
    await judy.close()


async def test_a_replacement_text_over_the_limit_is_an_error(
    backend: Backend, closed: GatewayProcess
) -> None:
    kim = await connect(closed, "kim")
    backend.rules(message={"action": "allow", "text": "x" * 5000})
    await kim.send({"type": "message", "room": "lobby", "text": "short"})
    await kim.until(lambda: kim.has("error", code="unavailable"), 5, "error unavailable")
    assert not kim.has("message")
    await kim.close()
