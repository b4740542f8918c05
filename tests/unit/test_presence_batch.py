"""Presence batching without sockets: windows, diffs, cancelling, counts, and per-member marks."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.presence import Headcount
from gateway.presence_batch import COUNT_INTERVAL, COUNTED_AT, Batch, PresenceBatcher
from gateway.protocol import render_text

CHANNEL = "room:big"
WINDOW = 0.05


def change(event: str, user: str, online: int) -> dict[str, Any]:
    return {"type": "presence", "room": "big", "event": event, "user": user, "online": online}


class Recorder:
    """The batcher's flush: every batch, and an event set when one arrives."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.times: list[float] = []
        """The loop's clock at each flush."""
        self.arrived = asyncio.Event()

    def __call__(self, channel: str, batch: Batch) -> None:
        assert channel == CHANNEL
        self.batches.append(batch)
        self.times.append(asyncio.get_running_loop().time())
        self.arrived.set()

    async def next(self) -> Batch:
        self.arrived.clear()
        await asyncio.wait_for(self.arrived.wait(), 5)
        return self.batches[-1]


def batcher(recorder: Recorder, names_max: int = 1000) -> PresenceBatcher:
    return PresenceBatcher(WINDOW, names_max, recorder)


async def test_the_first_change_goes_out_at_once_as_todays_event() -> None:
    recorder = Recorder()
    batches = batcher(recorder)
    batches.add(CHANNEL, change("joined", "alice", 1))
    (batch,) = recorder.batches
    assert batches.event(batch) == change("joined", "alice", 1)
    batches.aclose()


async def test_a_window_of_one_change_sends_todays_event_of_several_a_diff() -> None:
    recorder = Recorder()
    batches = batcher(recorder)
    batches.add(CHANNEL, change("joined", "alice", 1))
    batches.add(CHANNEL, change("joined", "bob", 2))
    assert batches.event(await recorder.next()) == change("joined", "bob", 2)
    batches.add(CHANNEL, change("joined", "carol", 3))
    batches.add(CHANNEL, change("left", "alice", 2))
    event = batches.event(await recorder.next())
    assert event is not None
    assert {k: v for k, v in event.items() if k != "ts"} == {
        "type": "presence",
        "room": "big",
        "event": "diff",
        "joined": ["carol"],
        "left": ["alice"],
        "online": 2,
    }
    assert render_text(event) == "carol joined; alice left. 2 users online."
    batches.aclose()


async def test_a_join_and_a_leave_of_one_user_in_a_window_cancel_out() -> None:
    recorder = Recorder()
    batches = batcher(recorder)
    batches.add(CHANNEL, change("joined", "alice", 1))
    batches.add(CHANNEL, change("joined", "bob", 2))
    batches.add(CHANNEL, change("left", "bob", 1))
    batches.add(CHANNEL, change("joined", "carol", 2))
    assert batches.event(await recorder.next()) == change("joined", "carol", 2)
    batches.aclose()


async def test_a_window_whose_changes_cancel_out_sends_nothing_and_the_next_change_is_at_once() -> (
    None
):
    recorder = Recorder()
    batches = batcher(recorder)
    closed = asyncio.Event()
    end_window = batches._end_window

    def end_and_tell(channel: str, room: Any) -> None:
        end_window(channel, room)
        if room.timer is None:
            closed.set()

    batches._end_window = end_and_tell  # type: ignore[method-assign]
    batches.add(CHANNEL, change("joined", "alice", 1))
    batches.add(CHANNEL, change("joined", "bob", 2))
    batches.add(CHANNEL, change("left", "bob", 1))
    batch = await recorder.next()
    assert batches.event(batch) is None
    await asyncio.wait_for(closed.wait(), 5)  # the next window passed quietly and closed
    before = len(recorder.batches)
    batches.add(CHANNEL, change("joined", "dave", 2))
    assert len(recorder.batches) == before + 1
    batches.aclose()


async def test_a_large_room_gets_only_counts_one_a_window() -> None:
    recorder = Recorder()
    batches = batcher(recorder, names_max=2)
    batches.add(CHANNEL, change("joined", "u1", 3))
    first = batches.event(recorder.batches[0])
    assert first is not None
    assert (first["event"], first["online"], "user" in first) == ("count", 3, False)
    for n in range(2, 50):
        batches.add(CHANNEL, change("joined", f"u{n}", n + 2))
    event = batches.event(await recorder.next())
    assert event is not None
    assert (event["event"], event["online"]) == ("count", 51)
    assert render_text(event) == "51 users online."
    assert len(recorder.batches) == 2
    batches.aclose()


def window_left(batches: PresenceBatcher) -> float:
    """Seconds until the open window of the room ends."""
    timer = batches._rooms[CHANNEL].timer
    assert timer is not None, "no window open"
    return timer.when() - asyncio.get_running_loop().time()


async def test_a_large_room_gets_a_count_at_most_once_a_second() -> None:
    """A storm into a counted room: one event a second per member, not one per 50 ms window;
    the first count still goes out at once."""
    recorder = Recorder()
    batches = batcher(recorder, names_max=2)
    batches.add(CHANNEL, change("joined", "u1", 3))
    assert len(recorder.batches) == 1, "the first change of a quiet room waits for nothing"
    assert WINDOW < window_left(batches) <= COUNT_INTERVAL
    online = 3
    for _ in range(2):
        for _ in range(10):
            online += 1
            batches.add(CHANNEL, change("joined", f"u{online}", online))
        event = batches.event(await recorder.next())
        assert event is not None
        assert (event["event"], event["online"]) == ("count", online)
    first, second, third = recorder.times
    tolerance = 0.01  # asyncio may run a timer up to its clock resolution early
    assert second - first >= COUNT_INTERVAL - tolerance
    assert third - second >= COUNT_INTERVAL - tolerance
    batches.aclose()


async def test_a_room_that_names_its_members_keeps_the_short_window() -> None:
    recorder = Recorder()
    batches = batcher(recorder, names_max=2)
    batches.add(CHANNEL, change("joined", "alice", 1))
    assert 0 < window_left(batches) <= WINDOW
    batches.add(CHANNEL, change("joined", "bob", 2))
    batches.add(CHANNEL, change("joined", "carol", 3))
    event = batches.event(await recorder.next())
    assert event is not None
    assert event["event"] == "count"
    assert WINDOW < window_left(batches) <= COUNT_INTERVAL, "counted: the long window"
    batches.add(CHANNEL, change("left", "carol", 2))
    assert batches.event(await recorder.next()) == change("left", "carol", 2)
    assert 0 < window_left(batches) <= WINDOW, "named again: the short window"
    batches.aclose()


async def test_a_member_hears_only_the_changes_after_its_own_mark() -> None:
    recorder = Recorder()
    batches = batcher(recorder)
    batches.add(CHANNEL, change("joined", "alice", 1))
    batches.add(CHANNEL, change("left", "zed", 1))
    mark = batches.mark(CHANNEL)  # bob subscribes here: zed's leave is before his time
    batches.add(CHANNEL, change("joined", "bob", 2))
    batch = await recorder.next()
    older = batches.event(batch)
    assert older is not None
    assert (older["event"], older["joined"], older["left"]) == ("diff", ["bob"], ["zed"])
    assert batches.event(batch, mark) == change("joined", "bob", 2)
    assert batches.event(batch, batches.mark(CHANNEL)) is None
    batches.aclose()


async def test_a_window_of_zero_sends_every_change_as_it_comes() -> None:
    recorder = Recorder()
    batches = PresenceBatcher(0, 1000, recorder)
    for n in range(5):
        batches.add(CHANNEL, change("joined", f"u{n}", n + 1))
    assert [batches.event(batch) for batch in recorder.batches] == [
        change("joined", f"u{n}", n + 1) for n in range(5)
    ]


def test_a_summary_names_three_and_counts_the_rest() -> None:
    event = {
        "type": "presence",
        "room": "big",
        "event": "diff",
        "joined": ["a", "b", "c", "d", "e"],
        "left": ["z"],
        "online": 9,
    }
    assert render_text(event) == "a, b, c and 2 others joined; z left. 9 users online."


def counted(event: str, user: str, online: int, at: int) -> dict[str, Any]:
    return {**change(event, user, online), COUNTED_AT: at}


async def test_a_change_counted_before_the_newest_count_carries_the_newest() -> None:
    """Two workers' changes crossed on the way: the one counted earlier arrives last. Its count
    would have been the room's until the next change ("20 online" after a storm of 41)."""
    recorder = Recorder()
    batches = PresenceBatcher(0, 1000, recorder)
    batches.add(CHANNEL, counted("joined", "carl", 3, at=300))
    batches.add(CHANNEL, counted("joined", "bob", 2, at=200))
    batches.add(CHANNEL, counted("left", "abe", 2, at=400))
    events = [batches.event(batch) for batch in recorder.batches]
    assert events == [
        change("joined", "carl", 3),
        change("joined", "bob", 3),
        change("left", "abe", 2),
    ]


async def test_a_joins_own_count_orders_the_changes_after_it() -> None:
    recorder = Recorder()
    batches = PresenceBatcher(0, 1000, recorder)
    batches.counted(CHANNEL, Headcount(5, counted_at=500))
    batches.add(CHANNEL, counted("joined", "eve", 4, at=450))
    batches.counted(CHANNEL, Headcount(9))  # one process' count: no order to keep
    batches.add(CHANNEL, change("left", "eve", 4))
    assert [batches.event(batch) for batch in recorder.batches] == [
        change("joined", "eve", 5),
        change("left", "eve", 4),
    ]
