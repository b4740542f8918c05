"""The JSON protocol of the spec against a real `gateway serve`."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.support.clients import of_type, open_ws, recv_until
from tests.support.servers import GatewayProcess, start_gateway


@pytest.fixture(scope="module")
def server() -> Iterator[GatewayProcess]:
    with start_gateway({"GATEWAY_RATE_LIMIT": "0", "GATEWAY_API_KEY": "test-key"}) as gateway:
        yield gateway


def send(kind: str, **fields: object) -> str:
    return json.dumps({"type": kind, **fields})


async def test_messages_carry_ordered_ids(server: GatewayProcess) -> None:
    alice = await open_ws(server.ws_url("/ws/json-alice"))
    await alice.send(send("join", room="ordered"))
    await recv_until(alice, of_type("joined", room="ordered"))
    for n in range(20):
        await alice.send(send("message", room="ordered", text=f"m{n}"))
    ids = []
    for n in range(20):
        event, _ = await recv_until(alice, of_type("message", room="ordered", text=f"m{n}"))
        assert event["from"] == "json-alice"
        assert isinstance(event["ts"], float)
        ids.append(int(event["id"]))
    assert ids == sorted(ids)
    assert len(set(ids)) == 20
    await alice.close()


async def test_join_leave_presence_and_presence_api(server: GatewayProcess) -> None:
    alice = await open_ws(server.ws_url("/ws/json-p-alice"))
    bob = await open_ws(server.ws_url("/ws/json-p-bob"))
    await alice.send(send("join", room="club"))
    await recv_until(alice, of_type("joined", room="club"))
    await bob.send(send("join", room="club"))
    ack, _ = await recv_until(bob, of_type("joined", room="club"))
    assert ack["online"] == ["json-p-alice", "json-p-bob"]
    event, _ = await recv_until(alice, of_type("presence", room="club", user="json-p-bob"))
    assert (event["event"], event["online"]) == ("joined", 2)
    api = httpx.get(server.base_url + "/api/rooms/club/presence").json()
    assert api == {
        "room": "club",
        "count": 2,
        "online": ["json-p-alice", "json-p-bob"],
        "truncated": False,
    }
    await bob.send(send("leave", room="club"))
    await recv_until(bob, of_type("left", room="club"))
    event, _ = await recv_until(alice, of_type("presence", room="club", event="left"))
    assert (event["user"], event["online"]) == ("json-p-bob", 1)
    await bob.send(send("message", room="club", text="still here?"))
    error, _ = await recv_until(bob, of_type("error"))
    assert error["code"] == "unknown_room"
    await alice.close()
    await bob.close()


async def test_direct_message_and_ping(server: GatewayProcess) -> None:
    alice = await open_ws(server.ws_url("/ws/json-d-alice"))
    bob = await open_ws(server.ws_url("/ws/json-d-bob"))
    await recv_until(bob, of_type("joined"))
    await alice.send(send("direct", to="json-d-bob", text="psst"))
    event, _ = await recv_until(bob, of_type("direct"))
    assert (event["from"], event["to"], event["text"]) == ("json-d-alice", "json-d-bob", "psst")
    await alice.send(send("ping"))
    await recv_until(alice, of_type("pong"))
    await alice.close()
    await bob.close()


async def test_resume_after_reconnect_has_no_gap_and_no_duplicate(server: GatewayProcess) -> None:
    reader = await open_ws(server.ws_url("/ws/json-r-reader"))
    writer = await open_ws(server.ws_url("/ws/json-r-writer"))
    for ws in (reader, writer):
        await ws.send(send("join", room="resumable"))
        await recv_until(ws, of_type("joined", room="resumable"))
    await writer.send(send("message", room="resumable", text="before"))
    seen, _ = await recv_until(reader, of_type("message", text="before"))
    await reader.close()
    for n in range(5):
        await writer.send(send("message", room="resumable", text=f"missed {n}"))
    await recv_until(writer, of_type("message", text="missed 4"))
    reader = await open_ws(server.ws_url("/ws/json-r-reader"))
    await reader.send(send("resume", room="resumable", after=seen["id"]))
    await writer.send(send("message", room="resumable", text="after"))
    resumed, events = await recv_until(reader, of_type("resumed", room="resumable"))
    texts = [e["text"] for e in events if e["type"] == "message"]
    if "after" not in texts:  # published before the history was read, it is in the replay
        _, later = await recv_until(reader, of_type("message", text="after"))
        texts += [e["text"] for e in later if e["type"] == "message"] + ["after"]
    assert texts == [f"missed {n}" for n in range(5)] + ["after"]
    assert resumed["recovered"] is True
    await reader.close()
    await writer.close()


async def test_publish_api_reaches_websocket_clients(server: GatewayProcess) -> None:
    ws = await open_ws(server.ws_url("/ws/json-api-listener"))
    await recv_until(ws, of_type("joined"))
    url = server.base_url + "/api/rooms/lobby/messages"
    denied = httpx.post(url, json={"text": "x"}, headers={"Authorization": "Bearer wrong"})
    assert denied.status_code == 401
    accepted = httpx.post(
        url, json={"text": "from the server"}, headers={"Authorization": "Bearer test-key"}
    )
    assert accepted.status_code == 202
    event, _ = await recv_until(ws, of_type("message", text="from the server"))
    assert event["id"] == accepted.json()["id"]
    assert event["from"] == "api"
    too_big = httpx.post(
        url, json={"text": "x" * 1001}, headers={"Authorization": "Bearer test-key"}
    )
    assert too_big.status_code == 422
    await ws.close()
