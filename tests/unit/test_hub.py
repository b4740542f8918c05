"""The chat logic without sockets: node, sessions and outboxes over the memory broker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway import disconnect, metrics
from gateway.broker import BrokerUnavailable, History
from gateway.node import Node
from gateway.outbox import Outbox
from gateway.protocol import WireFormat
from gateway.settings import RateLimit, load_settings
from tests.support.fakes import FakeSink


class Client:
    def __init__(self, node: Node, user: str, wire: WireFormat = WireFormat.JSON) -> None:
        self.sink = FakeSink()
        self.outbox = Outbox(self.sink, wire, node.settings.send_queue)
        self.session = node.new_session(user, wire, self.outbox)

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [event for event in self.sink.events() if kind is None or event["type"] == kind]

    async def say(self, frame: str) -> None:
        await self.session.on_text(frame)


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    node = Node(
        load_settings(rate_limit=RateLimit(0, 0), send_queue=5, idle_timeout=0, presence_batch_ms=0)
    )
    await node.start()
    yield node
    await node.aclose()


async def connect(node: Node, user: str, wire: WireFormat = WireFormat.JSON) -> Client:
    client = Client(node, user, wire)
    assert await node.hub.attach(client.session, allow_duplicate=False) is None
    return client


async def test_broadcast_is_encoded_once_for_every_recipient(node: Node) -> None:
    alice, bob = await connect(node, "alice"), await connect(node, "bob")
    await alice.say('{"type":"message","text":"hello"}')
    assert alice.sink.raw[-1] is bob.sink.raw[-1]
    message = bob.events("message")[-1]
    assert (message["from"], message["text"], message["room"]) == ("alice", "hello", "lobby")
    assert int(message["id"]) > 0


async def test_a_broadcast_counts_each_frame_written_in_one_update(node: Node) -> None:
    """The fan-out counts what its recipients' sockets took, once per broadcast: a recipient
    whose socket is full (queued, counted by its writer) or that is closing adds nothing."""
    clients = [await connect(node, f"user{n}") for n in range(4)]
    full = clients[2]
    full.sink.writable = False
    full.sink.unblocked.clear()
    clients[3].session.close(disconnect.ABUSE)
    await asyncio.sleep(0)
    before = delivered()
    await clients[0].say('{"type":"message","text":"hello"}')
    await asyncio.sleep(0)
    assert delivered() == before + 2
    assert clients[1].events("message")[-1]["text"] == "hello"
    full.sink.unblocked.set()
    assert full.outbox.writer is not None
    await asyncio.wait_for(full.outbox.writer, 5)
    assert delivered() == before + 3


def delivered() -> float:
    return float(metrics.MESSAGES_DELIVERED._value.get())


async def test_every_connection_starts_in_the_lobby_with_presence(node: Node) -> None:
    alice = await connect(node, "alice")
    bob = await connect(node, "bob")
    assert alice.events("joined") == [
        {"type": "joined", "room": "lobby", "online": ["alice"], "count": 1, "last_id": "0"}
    ]
    joined = [(e["user"], e["online"]) for e in alice.events("presence")]
    assert joined == [("alice", 1), ("bob", 2)]
    await node.hub.detach(bob.session)
    assert alice.events("presence")[-1] | {"ts": 0} == {
        "type": "presence",
        "room": "lobby",
        "event": "left",
        "user": "bob",
        "online": 1,
        "ts": 0,
    }


async def test_rooms_are_separate(node: Node) -> None:
    alice, bob = await connect(node, "alice"), await connect(node, "bob")
    await alice.say('{"type":"join","room":"games"}')
    await alice.say('{"type":"message","room":"games","text":"gg"}')
    assert [e["text"] for e in alice.events("message")] == ["gg"]
    assert bob.events("message") == []
    await bob.say('{"type":"message","room":"games","text":"let me in"}')
    assert bob.events("error")[-1]["code"] == "unknown_room"


async def test_direct_messages_reach_the_recipient_and_echo(node: Node) -> None:
    alice, bob, carol = [await connect(node, name) for name in ("alice", "bob", "carol")]
    await alice.say('{"type":"direct","to":"bob","text":"psst"}')
    assert [e["text"] for e in bob.events("direct")] == ["psst"]
    assert [e["to"] for e in alice.events("direct")] == ["bob"]
    assert carol.events("direct") == []
    await alice.say('{"type":"direct","to":"nobody","text":"hello?"}')
    assert alice.events("error")[-1]["code"] == "invalid"


async def test_resume_replays_history_then_held_live_messages_without_gap_or_twin(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = await connect(node, "alice"), await connect(node, "bob")
    await alice.say('{"type":"join","room":"games"}')
    for n in range(5):
        await alice.say(f'{{"type":"message","room":"games","text":"m{n}"}}')
    real_history = node.broker.history

    async def history_while_live_messages_arrive(channel: str, after: int) -> History:
        snapshot = await real_history(channel, after)
        await alice.say('{"type":"message","room":"games","text":"live-1"}')
        await alice.say('{"type":"message","room":"games","text":"live-2"}')
        return snapshot

    monkeypatch.setattr(node.broker, "history", history_while_live_messages_arrive)
    third = alice.events("message")[2]["id"]
    bob.sink.raw.clear()
    await bob.say(f'{{"type":"resume","room":"games","after":"{int(third) - 1}"}}')
    await alice.say('{"type":"message","room":"games","text":"live-3"}')
    games = [e for e in bob.events() if e.get("room") == "games" and e["type"] != "presence"]
    kinds = [e["type"] for e in games]
    # The SPEC's order: joined, the replay, resumed, then live (also what arrived meanwhile).
    assert kinds == ["joined", *["message"] * 3, "resumed", *["message"] * 3]
    assert games[0]["last_id"] == alice.events("message")[4]["id"]
    assert [e["text"] for e in games if e["type"] == "message"] == [
        *("m2", "m3", "m4", "live-1", "live-2", "live-3")
    ]
    assert (games[4]["recovered"], games[4]["count"]) == (True, 3)


async def test_resume_in_a_joined_room_sends_nothing_twice(node: Node) -> None:
    alice, bob = await connect(node, "alice"), await connect(node, "bob")
    for n in range(3):
        await alice.say(f'{{"type":"message","text":"m{n}"}}')
    first = bob.events("message")[0]["id"]
    await bob.say(f'{{"type":"resume","room":"lobby","after":"{first}"}}')
    await alice.say('{"type":"message","text":"m3"}')
    assert [e["text"] for e in bob.events("message")] == ["m0", "m1", "m2", "m3"]
    assert (bob.events("resumed")[-1]["recovered"], bob.events("resumed")[-1]["count"]) == (
        True,
        0,
    )


async def test_messages_held_during_a_resume_count_against_the_send_queue(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A history read that never answers must not let held messages grow without bound."""
    alice, bob = await connect(node, "alice"), await connect(node, "bob")
    answer: asyncio.Future[History] = asyncio.get_running_loop().create_future()
    reading = asyncio.Event()

    async def stalled_history(channel: str, after: int) -> History:
        reading.set()
        return await answer

    monkeypatch.setattr(node.broker, "history", stalled_history)
    resuming = asyncio.create_task(bob.say('{"type":"resume","room":"lobby","after":"0"}'))
    await asyncio.wait_for(reading.wait(), 5)
    assert bob.session.rooms["lobby"].held == []
    for n in range(node.settings.send_queue + 1):
        await alice.say(f'{{"type":"message","text":"m{n}"}}')
    assert bob.session.closing == disconnect.SLOW_CONSUMER
    assert len(bob.session.rooms["lobby"].held or ()) == node.settings.send_queue
    answer.set_result(History([], complete=True))
    await resuming
    assert alice.session.closing is None


async def test_a_member_joining_during_the_first_subscription_waits_for_it(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The room's last_id is read once the broker hears the room, also by the second member:
    read earlier, a message published in between would reach neither live nor by resume."""
    alice, bob = await connect(node, "alice"), await connect(node, "bob")
    calls: list[str] = []
    subscribing, gate = asyncio.Event(), asyncio.Event()
    real_subscribe, real_last_id = node.broker.subscribe, node.broker.last_id

    async def slow_subscribe(channel: str) -> None:
        calls.append("subscribe")
        subscribing.set()
        await gate.wait()
        await real_subscribe(channel)
        calls.append("subscribed")

    async def last_id(channel: str) -> int:
        calls.append("last_id")
        return await real_last_id(channel)

    monkeypatch.setattr(node.broker, "subscribe", slow_subscribe)
    monkeypatch.setattr(node.broker, "last_id", last_id)
    first = asyncio.create_task(alice.say('{"type":"join","room":"games"}'))
    second = asyncio.create_task(bob.say('{"type":"join","room":"games"}'))
    # Tasks run in the order they were created: when this one wakes, bob's join has run up to
    # its first suspension.
    await asyncio.wait_for(subscribing.wait(), 5)
    assert calls == ["subscribe"]
    gate.set()
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert calls == ["subscribe", "subscribed", "last_id", "last_id"]
    assert [e["room"] for e in bob.events("joined")] == ["lobby", "games"]


async def test_resume_past_the_history_says_not_recovered() -> None:
    node = Node(load_settings(rate_limit=RateLimit(0, 0), history_size=3, idle_timeout=0))
    await node.start()
    alice = await connect(node, "alice")
    for n in range(6):
        await alice.say(f"m{n}")
    first = alice.events("message")[0]["id"]
    late = await connect(node, "late")
    await late.say(f'{{"type":"resume","room":"lobby","after":"{first}"}}')
    resumed = late.events("resumed")[-1]
    assert (resumed["recovered"], resumed["count"]) == (False, 3)
    await node.aclose()


async def test_slow_consumer_is_closed_and_nobody_else_notices(node: Node) -> None:
    alice, stalled = await connect(node, "alice"), await connect(node, "stalled")
    stalled.sink.writable = False
    stalled.sink.unblocked.clear()
    for n in range(10):
        await alice.say(f"flood {n}")
    assert stalled.session.closing is disconnect.SLOW_CONSUMER
    assert [e["text"] for e in alice.events("message")] == [f"flood {n}" for n in range(10)]
    stalled.sink.unblocked.set()
    assert stalled.outbox.writer is not None
    await asyncio.wait_for(stalled.outbox.writer, 5)
    assert stalled.sink.closed == (1013, "slow consumer")


async def test_backlog_is_coalesced_into_newline_delimited_frames(node: Node) -> None:
    alice, lagging = await connect(node, "alice"), await connect(node, "lagging")
    lagging.sink.writable = False
    lagging.sink.unblocked.clear()
    for n in range(3):
        await alice.say(f"m{n}")
    lagging.sink.unblocked.set()
    for _ in range(100):
        if lagging.sink.sent:
            break
        await asyncio.sleep(0)
    assert len(lagging.sink.sent) == 1
    assert [json.loads(line)["text"] for line in lagging.sink.sent[0].split("\n")] == [
        "m0",
        "m1",
        "m2",
    ]


async def test_rate_limit_then_abuse_closes_with_policy() -> None:
    node = Node(load_settings(rate_limit=RateLimit(3, 60), rate_limit_strikes=2, idle_timeout=0))
    await node.start()
    alice = await connect(node, "alice")
    for n in range(4):
        await alice.say(f"m{n}")
    assert [e["code"] for e in alice.events("error")] == ["rate_limited"]
    assert alice.session.closing is None
    await alice.say("again")
    assert alice.session.closing is disconnect.ABUSE
    assert len(alice.events("message")) == 3
    await node.aclose()


async def test_duplicate_client_id_is_refused(node: Node) -> None:
    await connect(node, "alice")
    twin = Client(node, "alice")
    assert await node.hub.attach(twin.session, allow_duplicate=False) is disconnect.DUPLICATE


async def test_text_format_gets_the_seed_sentences(node: Node) -> None:
    seed = await connect(node, "seed", wire=WireFormat.TEXT)
    alice = await connect(node, "alice")
    await alice.say("hello")
    await seed.say("   ")
    texts = [frame[2:].decode() for frame in seed.sink.raw]
    assert texts == [
        "seed joined. 1 users online.",
        "alice joined. 2 users online.",
        "alice: hello",
        "Invalid message format: empty message",
    ]


async def test_direct_message_during_a_broker_outage_gets_an_error(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await connect(node, "alice")

    async def unreachable(user: str) -> int:
        raise BrokerUnavailable("redis down")

    monkeypatch.setattr(node.presence, "connections_of", unreachable)
    await alice.say('{"type":"direct","to":"bob","text":"hello?"}')
    assert alice.events("error")[-1]["code"] == "unavailable"
    assert alice.session.closing is None
