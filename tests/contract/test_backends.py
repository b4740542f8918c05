"""What every broker and presence backend promises the hub: one suite, run against the embedded
``memory://`` backend, against Redis (a real redis-server, keys under a test prefix), against
Redis behind Sentinel (1 primary, 2 replicas, 3 sentinels, shared by the module), and against
Sentinel with ``min_replicas=1`` (every kept message waits for a replica's confirmation), and
against a 3-master Redis Cluster (sharded pub/sub).

Ids are compared relative to each other: the memory broker counts from 1, Redis from its
clock (so ids keep growing across a Redis that lost its data).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from gateway.broker import Broker, Envelope, create_broker, room_channel, user_channel
from gateway.presence import USER_ROOM, Presence, create_presence
from tests.support.fakes import TRACE, Inbox, message
from tests.support.servers import poll_until


@dataclass
class Backend:
    name: str
    url: str
    min_replicas: int = 0
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def broker(self, inbox: Inbox | None = None, history_size: int = 5) -> Broker:
        broker = create_broker(
            self.url, inbox or Inbox(), history_size, min_replicas=self.min_replicas
        )
        await broker.start()
        self.closers.append(broker.aclose)
        assert broker.ready
        return broker

    async def presence(self) -> Presence:
        presence = create_presence(self.url)
        await presence.start()
        self.closers.append(presence.aclose)
        return presence


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("sentinel", marks=pytest.mark.redis),
        pytest.param("sentinel-wait", marks=pytest.mark.redis),
        pytest.param("cluster", marks=pytest.mark.redis),
    ]
)
def backend_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param.startswith("sentinel"):
        prefix = f"test-{uuid.uuid4().hex[:12]}"
        return str(request.getfixturevalue("sentinel").url(prefix))
    if request.param == "cluster":
        return str(request.getfixturevalue("cluster").url(f"test-{uuid.uuid4().hex[:12]}"))
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
async def backend(backend_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    min_replicas = 1 if request.node.callspec.params["backend_url"] == "sentinel-wait" else 0
    chosen = Backend(backend_url.partition(":")[0], backend_url, min_replicas)
    try:
        yield chosen
    finally:
        for close in reversed(chosen.closers):
            await close()


def presence_event(room: str) -> Envelope:
    event = {"type": "presence", "room": room, "event": "joined", "user": "bob", "online": 1}
    return Envelope(room_channel(room), event, time.time())


# Ids and delivery


async def test_kept_publications_get_increasing_ids_per_room(backend: Backend) -> None:
    inbox = Inbox()
    broker = await backend.broker(inbox)
    await broker.subscribe(room_channel("a"))
    published = []
    for n in range(6):
        published.append(await broker.publish(message("a" if n % 2 else "b", f"m{n}"), keep=True))
    for envelope in published:
        assert envelope.seq > 0
        assert envelope.event["id"] == str(envelope.seq)
    for room in ("a", "b"):
        seqs = [e.seq for e in published if e.event["room"] == room]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == len(seqs)
    heard = await inbox.take(3)
    assert [e.seq for e in heard] == [e.seq for e in published if e.event["room"] == "a"]
    assert [e.event["id"] for e in heard] == [str(e.seq) for e in heard]


async def test_concurrent_publishers_get_unique_ids_delivered_in_order(backend: Backend) -> None:
    inbox = Inbox()
    broker = await backend.broker(inbox, history_size=100)
    await broker.subscribe(room_channel("busy"))
    published = await asyncio.gather(
        *(broker.publish(message("busy", f"m{n}"), keep=True) for n in range(40))
    )
    seqs = sorted(e.seq for e in published)
    assert len(set(seqs)) == 40
    heard = await inbox.take(40)
    assert [e.seq for e in heard] == seqs
    assert sorted(e.event["text"] for e in heard) == sorted(f"m{n}" for n in range(40))


async def test_delivery_follows_subscription(backend: Backend) -> None:
    inbox = Inbox()
    broker = await backend.broker(inbox)
    await broker.subscribe(room_channel("a"))
    await broker.subscribe(room_channel("marker"))
    await broker.publish(message("a", "while subscribed"), keep=True)
    assert (await inbox.next()).event["text"] == "while subscribed"

    await broker.unsubscribe(room_channel("a"))
    await broker.publish(message("a", "after unsubscribe"), keep=True)
    await broker.publish(message("never", "not subscribed"), keep=True)
    await broker.publish(message("marker", "marker"), keep=True)
    # One subscriber hears a channel in publication order: had the earlier ones reached it,
    # they would have come before the marker.
    assert (await inbox.next()).event["text"] == "marker"

    await broker.subscribe(room_channel("a"))
    await broker.publish(message("a", "subscribed again"), keep=True)
    assert (await inbox.next()).event["text"] == "subscribed again"
    assert inbox.queue.empty()


async def test_publication_round_trips_event_time_and_trace(backend: Backend) -> None:
    inbox = Inbox()
    broker = await backend.broker(inbox)
    await broker.subscribe(room_channel("r"))
    sent = message("r", 'h\u00e9llo \u2603 "quoted"\nnext line')
    accepted_at = sent.accepted_at
    await broker.publish(sent, keep=True)
    heard = await inbox.next()
    assert heard.channel == room_channel("r")
    assert heard.event == {**sent.event, "id": str(sent.seq)}
    assert heard.accepted_at == accepted_at
    assert heard.trace == TRACE


async def test_unkept_publications_have_no_id_and_no_history(backend: Backend) -> None:
    inbox = Inbox()
    broker = await backend.broker(inbox)
    await broker.subscribe(room_channel("r"))
    await broker.subscribe(user_channel("bob"))
    published = await broker.publish(presence_event("r"), keep=False)
    direct = Envelope(user_channel("bob"), {"type": "direct", "to": "bob", "text": "hi"}, 1.0)
    await broker.publish(direct, keep=False)
    assert published.seq == 0
    assert "id" not in published.event
    first, second = await inbox.take(2)
    assert (first.seq, first.event["type"]) == (0, "presence")
    assert "id" not in first.event
    assert (second.channel, second.event["text"]) == (user_channel("bob"), "hi")
    history = await broker.history(room_channel("r"), 0)
    assert history.messages == []


# History


async def test_history_keeps_the_last_messages_after_an_id(backend: Backend) -> None:
    broker = await backend.broker(history_size=5)
    channel = room_channel("h")
    seqs = [(await broker.publish(message("h", f"m{n}"), keep=True)).seq for n in range(8)]
    await broker.publish(presence_event("h"), keep=False)

    kept = await broker.history(channel, 0)
    assert [e.seq for e in kept.messages] == seqs[3:]
    assert [e.event["text"] for e in kept.messages] == [f"m{n}" for n in range(3, 8)]
    assert [e.event["id"] for e in kept.messages] == [str(s) for s in seqs[3:]]
    assert not kept.complete, "m0..m2 were trimmed: a client starting from nothing has a gap"

    after = await broker.history(channel, seqs[4])
    assert [e.seq for e in after.messages] == seqs[5:]
    assert after.complete


@pytest.mark.parametrize(
    ("after_index", "expected_from", "complete"),
    [
        (2, 3, True),  # the oldest kept one is the very next: nothing lost
        (1, 3, False),  # m2 was trimmed
        (7, 8, True),  # up to date
    ],
)
async def test_history_says_whether_it_reaches_back(
    backend: Backend, after_index: int, expected_from: int, complete: bool
) -> None:
    broker = await backend.broker(history_size=5)
    seqs = [(await broker.publish(message("h", f"m{n}"), keep=True)).seq for n in range(8)]
    history = await broker.history(room_channel("h"), seqs[after_index])
    assert [e.seq for e in history.messages] == seqs[expected_from:]
    assert history.complete is complete


async def test_history_from_nothing_is_complete_while_everything_is_kept(backend: Backend) -> None:
    broker = await backend.broker(history_size=5)
    seqs = [(await broker.publish(message("h", f"m{n}"), keep=True)).seq for n in range(5)]
    history = await broker.history(room_channel("h"), 0)
    assert [e.seq for e in history.messages] == seqs
    assert history.complete, "every message is kept: a client starting from nothing has no gap"


async def test_history_after_an_id_older_than_the_room_is_not_complete(backend: Backend) -> None:
    """An id from before the room's numbering began (a restarted process, a Redis that lost
    the room) means messages are gone, even when all the current ones are kept."""
    broker = await backend.broker(history_size=5)
    seqs = [(await broker.publish(message("h", f"m{n}"), keep=True)).seq for n in range(2)]
    history = await broker.history(room_channel("h"), seqs[0] - 1000)
    assert [e.seq for e in history.messages] == seqs
    assert not history.complete


async def test_last_id_is_the_newest_id_of_the_room(backend: Backend) -> None:
    inbox = Inbox()
    broker = await backend.broker(inbox)
    assert await broker.last_id(room_channel("fresh")) == 0
    seqs = [(await broker.publish(message("fresh", f"m{n}"), keep=True)).seq for n in range(3)]
    await broker.publish(presence_event("fresh"), keep=False)
    assert await broker.last_id(room_channel("fresh")) == seqs[-1]
    assert await broker.last_id(room_channel("other")) == 0


async def test_after_subscribe_every_id_above_last_id_is_delivered(backend: Backend) -> None:
    """What a joining member relies on: ids up to ``last_id`` are in history, every later one
    arrives live, while another publisher keeps posting through the subscription."""
    inbox = Inbox()
    broker = await backend.broker(inbox, history_size=500)
    shared = backend.name != "memory"  # the memory broker is one process: it publishes itself
    publisher = await backend.broker(history_size=500) if shared else broker
    channel = room_channel("busy")
    published: list[int] = []

    async def post() -> None:
        for n in range(200):
            published.append((await publisher.publish(message("busy", f"m{n}"), keep=True)).seq)

    posting = asyncio.create_task(post())
    await poll_until(lambda: len(published) >= 20, 10, "the publisher did not start")
    await broker.subscribe(channel)
    last = await broker.last_id(channel)
    await posting
    later = [seq for seq in published if seq > last]
    heard = [e.seq for e in await inbox.take(inbox.queue.qsize())]
    for _ in range(len(published)):
        if len([seq for seq in heard if seq > last]) >= len(later):
            break
        heard.append((await inbox.next()).seq)
    assert [seq for seq in heard if seq > last] == later
    kept = await broker.history(channel, 0)
    assert [e.seq for e in kept.messages if e.seq <= last] == [s for s in published if s <= last]


async def test_history_beyond_the_newest_id_is_empty_and_complete(backend: Backend) -> None:
    broker = await backend.broker()
    last = (await broker.publish(message("h", "only"), keep=True)).seq
    history = await broker.history(room_channel("h"), last + 10)
    assert (history.messages, history.complete) == ([], True)


async def test_history_of_a_room_never_published_to(backend: Backend) -> None:
    broker = await backend.broker()
    history = await broker.history(room_channel("silent"), 0)
    assert (history.messages, history.complete) == ([], True)


async def test_history_size_zero_keeps_nothing(backend: Backend) -> None:
    broker = await backend.broker(history_size=0)
    seqs = [(await broker.publish(message("h", f"m{n}"), keep=True)).seq for n in range(3)]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 3
    missed = await broker.history(room_channel("h"), seqs[0])
    assert (missed.messages, missed.complete) == ([], False)
    current = await broker.history(room_channel("h"), seqs[-1])
    assert (current.messages, current.complete) == ([], True)


# Presence


async def test_presence_lists_distinct_users_sorted(backend: Backend) -> None:
    presence = await backend.presence()
    await presence.add("lobby", "zoe", "c1")
    await presence.add("lobby", "adam", "c2")
    await presence.add("lobby", "zoe", "c3")
    await presence.add("other", "eve", "c4")
    assert await presence.online("lobby") == ["adam", "zoe"]
    assert await presence.online("other") == ["eve"]
    assert await presence.online("empty") == []

    await presence.remove("lobby", "zoe", "c1")
    assert await presence.online("lobby") == ["adam", "zoe"], "zoe's second tab is still there"
    await presence.remove("lobby", "zoe", "c3")
    assert await presence.online("lobby") == ["adam"]
    await presence.remove("lobby", "adam", "c2")
    assert await presence.online("lobby") == []


async def test_a_snapshot_counts_distinct_users_and_names_the_first_sorted(
    backend: Backend,
) -> None:
    presence = await backend.presence()
    for n, user in enumerate(["zoe", "adam", "zoe", "émile", "bob", "adam"]):
        await presence.add("big", user, f"c{n}")
    assert await presence.snapshot("big", 1000) == (4, ["adam", "bob", "zoe", "émile"])
    assert await presence.snapshot("big", 2) == (4, ["adam", "bob"])
    assert await presence.snapshot("big", 0) == (4, [])
    assert await presence.snapshot("empty", 5) == (0, [])
    await presence.remove("big", "zoe", "c0")
    assert await presence.snapshot("big", 0) == (4, []), "zoe's second tab is still there"
    await presence.remove("big", "zoe", "c2")
    assert await presence.snapshot("big", 9) == (3, ["adam", "bob", "émile"])
    assert await presence.snapshot("big", 9) == (3, sorted(await presence.online("big")))


async def test_a_join_answers_with_the_joiner_counted_and_a_leave_with_the_count_left(
    backend: Backend,
) -> None:
    """What a join's ack and a leave's event read, in one call each; several connections of
    one user count once, and the user stays until the last of them leaves."""
    presence = await backend.presence()
    assert await presence.join("big", "zoe", "c1", 10) == (1, ["zoe"])
    assert await presence.join("big", "adam", "c2", 1) == (2, ["adam"])
    assert await presence.join("big", "zoe", "c3", 10) == (2, ["adam", "zoe"]), "a second tab"
    assert await presence.join("big", "bob", "c4", 0) == (3, [])
    assert await presence.join("other", "zoe", "c1", 10) == (1, ["zoe"])
    assert await presence.leave("big", "zoe", "c1") == 3, "zoe's second tab is still there"
    assert await presence.leave("big", "zoe", "c3") == 2
    assert await presence.leave("big", "zoe", "c3") == 2, "a second leave changes nothing"
    assert await presence.leave("big", "nobody", "c9") == 2
    assert await presence.snapshot("big", 10) == (2, ["adam", "bob"])
    assert await presence.online("other") == ["zoe"]
    assert await presence.rooms() == [("big", 2), ("other", 1)]
    await presence.remove("big", "adam", "c2")
    assert await presence.leave("big", "bob", "c4") == 0
    assert await presence.snapshot("big", 10) == (0, [])
    assert await presence.rooms() == [("other", 1)]


async def test_presence_counts_connections_of_a_user(backend: Backend) -> None:
    presence = await backend.presence()
    assert await presence.connections_of("bob") == 0
    await presence.add(USER_ROOM, "bob", "c1")
    await presence.add(USER_ROOM, "bob", "c2")
    await presence.add("lobby", "bob", "c1")
    await presence.add(USER_ROOM, "carol", "c3")
    assert await presence.connections_of("bob") == 2
    assert await presence.connections_of("carol") == 1
    await presence.remove(USER_ROOM, "bob", "c1")
    assert await presence.connections_of("bob") == 1
    await presence.remove(USER_ROOM, "bob", "c2")
    assert await presence.connections_of("bob") == 0


async def test_presence_remove_of_unknown_entries_is_harmless(backend: Backend) -> None:
    presence = await backend.presence()
    await presence.remove("nowhere", "nobody", "c0")
    await presence.add("lobby", "ann", "c1")
    await presence.remove("lobby", "ann", "c-other")
    await presence.remove("lobby", "someone", "c1")
    assert await presence.online("lobby") == ["ann"]
