"""The seed tutorial's chat, on its text wire format, against a real `gateway serve`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.clients import open_ws, recv_text_until, wait_closed
from tests.support.metrics import metric
from tests.support.servers import GatewayProcess, start_gateway, wait_until


@pytest.fixture(scope="module")
def server() -> Iterator[GatewayProcess]:
    with start_gateway() as gateway:
        yield gateway


async def test_anonymous_endpoint_broadcasts_to_everyone(server: GatewayProcess) -> None:
    first = await open_ws(server.ws_url("/ws"))
    joined, _ = await recv_text_until(first, lambda f: " joined. " in f)
    me = joined.split(" ")[0]
    assert me.startswith("anonymous-")
    second = await open_ws(server.ws_url("/ws"))
    other, _ = await recv_text_until(second, lambda f: " joined. " in f)
    await first.send("Hello everyone")
    expected = f"{me}: Hello everyone"
    for ws in (first, second):
        await recv_text_until(ws, lambda f: f == expected)
    assert other.split(" ")[0] != me
    await first.close()
    await second.close()


async def test_chat_join_message_and_leave_notices(server: GatewayProcess) -> None:
    bob = await open_ws(server.ws_url("/ws/seed-bob?format=text"))
    await recv_text_until(bob, lambda f: f.startswith("seed-bob joined. "))
    alice = await open_ws(server.ws_url("/ws/seed-alice?format=text"))
    notice, _ = await recv_text_until(bob, lambda f: f.startswith("seed-alice joined."))
    count = int(notice.split(". ")[1].split(" ")[0])
    assert notice == f"seed-alice joined. {count} users online."
    assert count >= 2
    await alice.send("hi bob")
    await recv_text_until(bob, lambda f: f == "seed-alice: hi bob")
    await recv_text_until(alice, lambda f: f == "seed-alice: hi bob")
    await alice.close()
    await recv_text_until(bob, lambda f: f == "seed-alice left the chat")
    await bob.close()


async def test_validation_answers_in_plain_sentences(server: GatewayProcess) -> None:
    ws = await open_ws(server.ws_url("/ws/seed-validate?format=text"))
    await ws.send("   ")
    await recv_text_until(ws, lambda f: f.startswith("Invalid message format"))
    await ws.send("x" * 1001)
    await recv_text_until(ws, lambda f: f.startswith("Message too large"))
    await ws.send("x" * 1000)
    await recv_text_until(ws, lambda f: f == "seed-validate: " + "x" * 1000)
    await ws.close()


async def test_seed_rate_limit_is_ten_per_minute(server: GatewayProcess) -> None:
    ws = await open_ws(server.ws_url("/ws/seed-spammer?format=text"))
    for n in range(11):
        await ws.send(f"msg {n}")
    _, before = await recv_text_until(ws, lambda f: f == "Rate limit exceeded. Slow down.")
    assert [f for f in before if f.startswith("seed-spammer: ")] == [
        f"seed-spammer: msg {n}" for n in range(10)
    ]
    await ws.close()


async def test_direct_messages_in_text_format(server: GatewayProcess) -> None:
    carol = await open_ws(server.ws_url("/ws/seed-carol?format=text"))
    dave = await open_ws(server.ws_url("/ws/seed-dave?format=text"))
    await recv_text_until(dave, lambda f: f.startswith("seed-dave joined"))
    await carol.send("/msg seed-dave just for you")
    await recv_text_until(dave, lambda f: f == "seed-carol (direct): just for you")
    await carol.close()
    await dave.close()


async def test_client_close_is_counted_as_client(server: GatewayProcess) -> None:
    closed = "gateway_connections_closed_total"
    before = metric(server.base_url, closed, reason="client")
    ws = await open_ws(server.ws_url("/ws/seed-closer?format=text"))
    await recv_text_until(ws, lambda f: f.startswith("seed-closer joined"))
    await ws.close()
    code, _ = await wait_closed(ws)
    assert code == 1000
    wait_until(
        lambda: metric(server.base_url, closed, reason="client") == before + 1,
        5,
        "client close not counted",
    )
