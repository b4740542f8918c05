"""Graceful drain: how a worker leaves without dropping anyone, as one readable sequence.

The server layer decides *when* (:mod:`gateway.server.uvicorn_server` runs it at the top of
uvicorn's shutdown, before uvicorn's own bare 1012 to every WebSocket); this module decides
*how*: readiness off, every client's stream stopped where it is, a jittered ``reconnect`` hint
after what is queued, 1012 once flushed, in batches the broker can take, and a deadline that
cuts whoever could not take their frames in time.

The whole stop, backends included, fits in ``GATEWAY_DRAIN_TIMEOUT`` counted from the signal:
gunicorn's ``graceful_timeout`` (drain + 5 s) and the orchestrator's grace period are larger.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from gateway import metrics
from gateway.node import Node

log = logging.getLogger("gateway.drain")

BATCH_SIZE = 200
"""Connections detached and closed together; the next batch waits for this one's presence
removal and ``left`` events, so the broker never takes thousands at once."""


@dataclass(frozen=True, slots=True)
class DrainReport:
    connections: int
    """Clients sent away: a ``reconnect`` hint, their queued frames, then close 1012."""
    cut: int
    """Of those, still open at the deadline and aborted: their unsent frames were lost."""
    seconds: float


async def drain(node: Node, *, deadline: float, cut_grace: float = 0.5) -> DrainReport:
    """Send every client of this worker away, flushed and in order, before ``deadline``.

    ``deadline`` is a ``time.monotonic()`` instant; ``cut_grace`` bounds the wait for the
    connections aborted at the deadline to finish their cleanup.
    """
    started = time.monotonic()
    # 1. Readiness off: /readyz answers 503 and new upgrades are sent away on arrival.
    hub = node.hub
    node.draining = True
    metrics.DRAINING.set(1)
    sent_away = cut = 0
    try:
        # 2. Every client's stream stops where it is: what is queued is flushed, the rest
        #    comes from history when it resumes elsewhere.
        leaving = [session for session in list(node.connections) if hub.stop_delivery(session)]
        sent_away = len(leaving)
        # 3. In batches (Hub.send_away): detach (presence removed, `left` events published),
        #    then a jittered `reconnect` hint after whatever is queued, then 1012 once the
        #    queue is flushed. The next batch starts when this one is detached: the broker
        #    takes the `left` events at its own pace, not thousands at once.
        sending: list[asyncio.Task[None]] = []
        for first in range(0, len(leaving), BATCH_SIZE):
            batch = leaving[first : first + BATCH_SIZE]
            tasks = [asyncio.create_task(hub.send_away(session)) for session in batch]
            for task in tasks:
                task.add_done_callback(_log_failure)
            sending += tasks
            await _wait(tasks, deadline - time.monotonic())

        # 4. Wait for the last close and cleanup, up to the deadline.
        await _wait(list(node.connections.values()), deadline - time.monotonic())

        # 5. Deadline: whoever could not take their frames in time is cut off.
        stuck = [(s, t) for s, t in node.connections.items() if not t.done()]
        for session, task in stuck:
            if not session.outbox.sink.abort():
                task.cancel()
        cut = len(stuck)
        await _wait([task for _, task in stuck] + sending, cut_grace)
        for task in sending:
            task.cancel()  # a detach the broker never answered
    finally:
        metrics.DRAINING.set(0)

    return _logged(DrainReport(sent_away, cut, time.monotonic() - started))


def _logged(report: DrainReport) -> DrainReport:
    log.info(
        "worker %d drained %d connections in %.2f s (%d closed with 1012 after their queued "
        "frames, %d cut at the deadline)",
        os.getpid(),
        report.connections,
        report.seconds,
        report.connections - report.cut,
        report.cut,
        extra={
            "drained": report.connections,
            "cut": report.cut,
            "duration_seconds": round(report.seconds, 3),
        },
    )
    return report


async def _wait(tasks: list[asyncio.Task[Any]], seconds: float) -> None:
    if tasks and seconds > 0:
        await asyncio.wait(tasks, timeout=seconds)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("drain: detaching a connection failed: %r", task.exception())


def shutdown_reserve(drain_timeout: float) -> float:
    """What the drain leaves of the timeout for the server's shutdown and the backends' close."""
    return min(max(0.2 * drain_timeout, 0.5), 3.0, drain_timeout / 2)
