"""The Outbox on its own: lazy queue and writer, order, bound, close, a peer that is gone."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway import disconnect, metrics
from gateway.outbox import Outbox, OutFrame
from gateway.protocol import WireFormat
from tests.support.fakes import FakeSink


def frame(text: str) -> OutFrame:
    return OutFrame({"type": "message", "text": text})


def texts(sink: FakeSink) -> list[str]:
    return [json.loads(line)["text"] for chunk in sink.written for line in chunk.split("\n")]


async def finish(outbox: Outbox) -> None:
    writer = outbox.writer
    assert writer is not None
    await asyncio.wait_for(writer, 5)


def delivered() -> float:
    return float(metrics.MESSAGES_DELIVERED._value.get())


async def test_an_idle_outbox_holds_no_queue_and_no_task() -> None:
    sink = FakeSink()
    outbox = Outbox(sink, WireFormat.JSON, 10)
    outbox.offer(frame("now"))
    assert (outbox.writer, len(outbox), texts(sink)) == (None, 0, ["now"])
    assert outbox._queue is None


async def test_a_backlog_starts_a_writer_that_ends_and_drops_the_queue_when_drained() -> None:
    sink = FakeSink()
    outbox = Outbox(sink, WireFormat.JSON, 10)
    sink.writable = False
    for n in range(3):
        outbox.offer(frame(f"m{n}"))
    assert len(outbox) == 3
    await finish(outbox)
    assert texts(sink) == ["m0", "m1", "m2"]
    assert len(sink.written) == 1, "a JSON backlog is one newline-delimited frame"
    assert (outbox.writer, outbox._queue, outbox.finished) == (None, None, False)
    sink.writable = False
    outbox.offer(frame("again"))
    await finish(outbox)
    assert texts(sink)[-1] == "again"


async def test_nothing_overtakes_a_frame_the_writer_is_still_sending() -> None:
    sink = FakeSink()
    outbox = Outbox(sink, WireFormat.TEXT, 10)
    sink.writable = False
    sink.unblocked.clear()
    outbox.offer(OutFrame({"type": "message", "from": "a", "text": "first"}))
    await asyncio.wait_for(sink.send_started.wait(), 5)
    assert len(outbox) == 0  # taken by the writer, not yet on the socket
    sink.writable = True
    outbox.offer(OutFrame({"type": "message", "from": "a", "text": "second"}))
    sink.unblocked.set()
    await finish(outbox)
    assert sink.written == ["a: first", "a: second"]


async def test_a_full_queue_calls_on_overflow_and_drops_the_frame() -> None:
    sink = FakeSink()
    outbox = Outbox(sink, WireFormat.JSON, 2)
    overflows: list[int] = []
    outbox.on_overflow = lambda: overflows.append(len(outbox))
    sink.writable = False
    sink.unblocked.clear()
    for n in range(3):
        outbox.offer(frame(f"m{n}"))
    assert overflows == [2]


async def test_close_with_flush_sends_the_queue_then_closes() -> None:
    sink = FakeSink()
    outbox = Outbox(sink, WireFormat.JSON, 10)
    sink.writable = False
    outbox.offer(frame("queued"))
    outbox.close(disconnect.DRAIN, flush=True)
    outbox.offer(frame("late"))
    await finish(outbox)
    assert texts(sink) == ["queued"]
    assert sink.closed == (disconnect.DRAIN.code, disconnect.DRAIN.detail)
    assert outbox.finished
    assert outbox.writer is None


async def test_close_of_an_idle_outbox_starts_a_writer_to_close() -> None:
    sink = FakeSink()
    outbox = Outbox(sink, WireFormat.JSON, 10)
    outbox.close(disconnect.IDLE_TIMEOUT, flush=True)
    await finish(outbox)
    assert sink.closed == (disconnect.IDLE_TIMEOUT.code, disconnect.IDLE_TIMEOUT.detail)
    assert outbox.finished


async def test_close_without_flush_drops_the_queue_and_abandons_a_blocked_send() -> None:
    sink = FakeSink()
    outbox = Outbox(sink, WireFormat.TEXT, 10)
    sink.writable = False
    sink.unblocked.clear()
    outbox.offer(OutFrame({"type": "message", "from": "a", "text": "stuck"}))
    outbox.offer(OutFrame({"type": "message", "from": "a", "text": "dropped"}))
    await asyncio.wait_for(sink.send_started.wait(), 5)
    outbox.close(disconnect.SLOW_CONSUMER, flush=False)
    await finish(outbox)
    assert sink.written == []
    assert sink.closed == (disconnect.SLOW_CONSUMER.code, disconnect.SLOW_CONSUMER.detail)


async def test_a_gone_peer_ends_the_writer_for_good() -> None:
    sink = FakeSink()
    outbox = Outbox(sink, WireFormat.JSON, 10)
    sink.writable = False
    sink.gone = True
    outbox.offer(frame("lost"))
    await finish(outbox)
    assert outbox.finished
    assert outbox.writer is None
    outbox.offer(frame("queued, never sent"))
    outbox.close(disconnect.CLIENT, flush=True)
    assert outbox.writer is None
    assert sink.closed is None


@pytest.mark.parametrize("wire", list(WireFormat))
async def test_a_backlog_keeps_its_order(wire: WireFormat) -> None:
    sink = FakeSink()
    outbox = Outbox(sink, wire, 100)
    sink.writable = False
    for n in range(20):
        outbox.offer(OutFrame({"type": "message", "from": "a", "text": f"m{n}"}))
    await finish(outbox)
    got = texts(sink) if wire is WireFormat.JSON else [t[3:] for t in sink.written]
    assert got == [f"m{n}" for n in range(20)]


async def test_frames_written_are_counted_once_per_loop_tick() -> None:
    """Every frame a socket took counts in gateway_messages_delivered_total; a fan-out's worth
    reaches the metric as one update on the next tick, not one per recipient."""
    sinks = [FakeSink() for _ in range(3)]
    outboxes = [Outbox(sink, WireFormat.JSON, 10) for sink in sinks]
    before = delivered()
    for outbox in outboxes:
        outbox.offer(frame("fan-out"))
    assert delivered() == before
    await asyncio.sleep(0)  # one loop iteration: the fold was scheduled with call_soon
    assert delivered() == before + 3
    sinks[0].writable = False
    outboxes[0].offer(frame("queued"))
    await finish(outboxes[0])
    assert delivered() == before + 4
