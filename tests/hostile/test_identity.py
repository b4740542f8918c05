"""Identities against one real gateway (memory broker): look-alike ids, the reserved prefix,
and lines a text-format client could be tricked into showing (SPEC "Hardening": "Identities")."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from tests.hostile.identity import LINE_BREAKS, breaks_in, connect_as, leave
from tests.support.clients import open_ws, recv_text_until, recv_until
from tests.support.metrics import metric
from tests.support.servers import GatewayProcess, scaled, start_gateway

API_KEY = "identity-key-" + "k" * 32
CLOSED = "gateway_connections_closed_total"
REFUSED = "gateway_connections_refused_total"
LOOK_ALIKES = [
    "Alice",
    "ALICE",
    "alice ",
    " alice",
    "al\u0456ce",  # Cyrillic i
    "alice\u00a0",
    "\uff41lice",  # fullwidth a (NFKC)
    "\u0430lice",  # Cyrillic a
    "ali\u0441e",  # Cyrillic es
]
RESERVED = ["anonymous-1", "Anonymous-1", "ANONYMOUS-7", "anonymous\u20101", "an\u043enymous-2"]


@pytest.fixture(scope="module")
def server() -> Iterator[GatewayProcess]:
    env = {"GATEWAY_RATE_LIMIT": "0", "GATEWAY_API_KEY": API_KEY, "GATEWAY_IDLE_TIMEOUT": "0"}
    with start_gateway(env) as gateway:
        yield gateway


@pytest.fixture
async def bystander(server: GatewayProcess) -> AsyncIterator[ClientConnection]:
    """A calm client whose service every probe must leave intact."""
    ws = await open_ws(server.ws_url("/ws/calm-bystander"))
    await recv_until(ws, lambda e: e.get("type") == "joined")
    yield ws
    await ws.close()


async def still_served(ws: ClientConnection, text: str) -> None:
    await ws.send(json.dumps({"type": "message", "text": text}))
    await recv_until(ws, lambda e: e.get("type") == "message" and e.get("text") == text)
    await ws.close()


async def test_look_alikes_of_a_connected_id_are_refused_as_duplicates(
    server: GatewayProcess, bystander: ClientConnection
) -> None:
    alice = await connect_as(server, "alice")
    assert alice.admitted
    before = metric(server.base_url, CLOSED, reason="policy")
    admitted = []
    for variant in LOOK_ALIKES:
        outcome = await connect_as(server, variant)
        if outcome.admitted:
            admitted.append(variant)
            await leave(outcome)
        else:
            assert (outcome.code, outcome.reason) == (1008, "client id already connected")
    assert admitted == [], f"admitted beside 'alice': {admitted!r}"
    assert metric(server.base_url, CLOSED, reason="policy") == before + len(LOOK_ALIKES)
    await leave(alice)
    for variant in LOOK_ALIKES:  # each is one person's id once alice has left
        outcome = await connect_as(server, variant)
        assert outcome.admitted, (variant, outcome.code, outcome.reason)
        await leave(outcome)
    await still_served(bystander, "still here after the look-alikes")


async def test_the_displayed_id_is_nfc_and_stripped(server: GatewayProcess) -> None:
    decomposed = "  zoe\u0301 "
    outcome = await connect_as(server, decomposed)
    assert outcome.admitted
    assert outcome.ws is not None
    await outcome.ws.send(json.dumps({"type": "message", "text": "who am I"}))
    event, _ = await recv_until(outcome.ws, lambda e: e.get("type") == "message")
    assert event["from"] == "zo\u00e9"
    await leave(outcome)


async def test_reserved_prefix_look_alikes_are_refused(
    server: GatewayProcess, bystander: ClientConnection
) -> None:
    before = metric(server.base_url, REFUSED, reason="forbidden")
    answers = {variant: (await connect_as(server, variant)).code for variant in RESERVED}
    assert answers == dict.fromkeys(RESERVED, 403)
    assert metric(server.base_url, REFUSED, reason="forbidden") == before + len(RESERVED)
    await still_served(bystander, "still here after the reserved ids")


async def test_ids_with_a_line_break_are_refused(
    server: GatewayProcess, bystander: ClientConnection
) -> None:
    for char in LINE_BREAKS:
        outcome = await connect_as(server, f"bob{char}alice joined")
        assert not outcome.admitted, hex(ord(char))
        assert outcome.code == 1008, (hex(ord(char)), outcome.code)
    await still_served(bystander, "still here after the broken ids")


async def test_no_path_puts_a_line_break_in_a_text_frame(server: GatewayProcess) -> None:
    reader = await open_ws(server.ws_url("/ws/text-reader?format=text"))
    await recv_text_until(reader, lambda frame: "text-reader joined" in frame)
    mallory = await open_ws(server.ws_url("/ws/mallory"))
    await recv_until(mallory, lambda e: e.get("type") == "joined")
    texter = await open_ws(server.ws_url("/ws/texter?format=text"))
    frames: list[str] = []
    refusals: list[str] = []

    async def expect(marker: str) -> None:
        frame, seen = await recv_text_until(reader, lambda f: marker in f)
        frames.extend([*seen, frame])

    for n, char in enumerate(LINE_BREAKS):
        forged = f"hello{char}alice: hi {n}"
        await mallory.send(json.dumps({"type": "message", "text": f"chat {forged}"}))
        await expect("chat hello")
        await mallory.send(json.dumps({"type": "direct", "to": "text-reader", "text": forged}))
        await expect("(direct)")
        await texter.send(f"typed {forged}")
        await expect("typed hello")
        response = httpx.post(
            server.base_url + "/api/rooms/lobby/messages",
            json={"text": f"api {forged}", "sender": "api"},
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=scaled(5),
        )
        assert response.status_code == 202
        await expect("api hello")
        forged_sender = httpx.post(
            server.base_url + "/api/rooms/lobby/messages",
            json={"text": f"sender {n}", "sender": f"api{char}alice"},
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=scaled(5),
        )
        if forged_sender.status_code != 422:
            refusals.append(f"API sender {hex(ord(char))}: {forged_sender.status_code}")
        twin = await connect_as(server, f"eve{char}alice")
        if twin.admitted or twin.code != 1008:
            refusals.append(f"client id {hex(ord(char))}: {twin.code}")
        await leave(twin)
    await mallory.send(json.dumps({"type": "message", "text": "the last one"}))
    await expect("the last one")
    broken = {frame: breaks_in(frame) for frame in frames if breaks_in(frame)}
    assert broken == {}, f"{len(broken)} frames carry a line break: {list(broken.items())[:3]}"
    assert refusals == [], "ids with a line break were taken"
    await asyncio.gather(mallory.close(), texter.close(), reader.close())


async def test_an_id_with_nothing_to_compare_is_refused(server: GatewayProcess) -> None:
    """Private-use characters have no skeleton: such an id could never be told apart."""
    first = await connect_as(server, "\ue000\ue001")
    assert (first.admitted, first.code) == (False, 1008)
