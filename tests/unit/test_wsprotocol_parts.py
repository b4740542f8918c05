"""The light stand-ins for uvicorn's per-connection asyncio.Queue and asyncio.Event."""

from __future__ import annotations

import asyncio

import pytest

from gateway.server.wsprotocol import Flag, ReceiveQueue


async def test_receive_queue_hands_out_events_in_order() -> None:
    queue = ReceiveQueue()
    assert queue.empty()
    queue.put_nowait({"type": "websocket.connect"})
    queue.put_nowait({"type": "websocket.receive", "text": "a"})
    assert not queue.empty()
    assert await queue.get() == {"type": "websocket.connect"}
    assert await queue.get() == {"type": "websocket.receive", "text": "a"}
    assert queue.empty()


async def test_receive_queue_wakes_a_waiting_reader() -> None:
    queue = ReceiveQueue()
    reader = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not reader.done()
    queue.put_nowait({"type": "websocket.disconnect", "code": 1000})
    assert await asyncio.wait_for(reader, 5) == {"type": "websocket.disconnect", "code": 1000}


async def test_receive_queue_survives_a_cancelled_reader() -> None:
    queue = ReceiveQueue()
    reader = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    queue.put_nowait({"type": "websocket.receive", "text": "b"})
    assert await asyncio.wait_for(queue.get(), 5) == {"type": "websocket.receive", "text": "b"}


async def test_receive_queue_refuses_a_second_concurrent_reader() -> None:
    queue = ReceiveQueue()
    first = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await queue.get()
    queue.put_nowait({"type": "websocket.receive", "text": "c"})
    assert await asyncio.wait_for(first, 5) == {"type": "websocket.receive", "text": "c"}


async def test_flag_behaves_like_an_event() -> None:
    flag = Flag()
    assert not flag.is_set()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(waiter.done() for waiter in waiters)
    flag.set()
    flag.clear()  # woken waiters still return True, as with asyncio.Event
    assert await asyncio.wait_for(asyncio.gather(*waiters), 5) == [True, True]
    flag.set()
    assert flag.is_set()
    assert await flag.wait() is True


async def test_flag_forgets_a_cancelled_waiter() -> None:
    flag = Flag()
    waiter = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not flag._waiters
    flag.set()
    assert await flag.wait() is True
