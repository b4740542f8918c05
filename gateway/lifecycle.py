"""Graceful drain: how a worker leaves without dropping anyone.

uvicorn's own shutdown sends every WebSocket a bare 1012 at once and only then runs the app's
lifespan shutdown, so a lifespan hook comes too late to drain anything. :class:`DrainingServer`
therefore runs :func:`drain` at the top of uvicorn's ``shutdown()`` and lets uvicorn finish
afterwards: it closes what is left (idle HTTP keep-alives) and runs the lifespan shutdown, which
closes the broker and presence backends once the last ``left`` event is out.

Every way a worker is told to stop reaches that method: SIGTERM or SIGINT to ``gateway serve``
or to a gunicorn worker, the gunicorn master's TERM to its workers on stop and on HUP reload,
and uvicorn's ``limit_max_requests`` (gunicorn ``max_requests`` recycling).

The whole stop, backends included, fits in ``GATEWAY_DRAIN_TIMEOUT`` counted from the signal:
gunicorn's ``graceful_timeout`` (drain + 5 s) and the orchestrator's grace period are larger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn

from gateway import metrics, transport
from gateway.hub import Hub

log = logging.getLogger("gateway.lifecycle")

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


async def drain(hub: Hub, *, deadline: float, cut_grace: float = 0.5) -> DrainReport:
    """Send every client of this worker away, flushed and in order, before ``deadline``.

    ``deadline`` is a ``time.monotonic()`` instant; ``cut_grace`` bounds the wait for the
    connections aborted at the deadline to finish their cleanup.
    """
    started = time.monotonic()
    # 1. Readiness off: /readyz answers 503 and new upgrades are sent away on arrival.
    hub.draining = True
    metrics.DRAINING.set(1)
    sent_away = cut = 0
    try:
        # 2. Every client's stream stops where it is: what is queued is flushed, the rest
        #    comes from history when it resumes elsewhere.
        leaving = [session for session in list(hub.connections) if hub.stop_delivery(session)]
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
        await _wait(list(hub.connections.values()), deadline - time.monotonic())

        # 5. Deadline: whoever could not take their frames in time is cut off.
        stuck = [(s, t) for s, t in hub.connections.items() if not t.done()]
        for session, task in stuck:
            if not transport.abort(session):
                task.cancel()
        cut = len(stuck)
        await _wait([task for _, task in stuck] + sending, cut_grace)
        for task in sending:
            task.cancel()  # a detach the broker never answered
    finally:
        metrics.DRAINING.set(0)

    report = DrainReport(sent_away, cut, time.monotonic() - started)
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


def hub_of(app: object) -> Hub | None:
    """The gateway hub behind an ASGI app, if it is the gateway's."""
    hub = getattr(getattr(app, "state", None), "hub", None)
    return hub if isinstance(hub, Hub) else None


def shutdown_reserve(drain_timeout: float) -> float:
    """What the drain leaves of the timeout for uvicorn's own shutdown and the backends' close."""
    return min(max(0.2 * drain_timeout, 0.5), 3.0, drain_timeout / 2)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, draining the gateway before uvicorn's own connection shutdown.

    Under gunicorn (``sockets`` handed in) the worker also stops accepting as the drain starts:
    its siblings, or the next generation of workers, take the new connections, and a new
    master can bind the port once the old one is gone. ``gateway serve`` keeps its only
    listener open during the drain so /readyz can say 503 and late upgrades get the hint.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.stop_requested_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        hub = hub_of(self.config.app)
        if hub is not None and not self.force_exit:
            timeout = hub.settings.drain_timeout
            reserve = shutdown_reserve(timeout)
            limit = (self.stop_requested_at or time.monotonic()) + timeout
            if sockets is not None:
                for server in self.servers:
                    server.close()
            graceful = min(self.config.timeout_graceful_shutdown or reserve, reserve / 4)
            # Typed int by uvicorn, but only ever handed to asyncio.wait_for.
            self.config.timeout_graceful_shutdown = graceful  # type: ignore[assignment]
            async with self._keep_notifying():
                await self._unless_forced(
                    drain(hub, deadline=limit - reserve, cut_grace=reserve / 2)
                )
        await super().shutdown(sockets)

    async def _unless_forced(self, work: Awaitable[Any]) -> None:
        """Run ``work``, giving up on it if a second Ctrl-C asks for a forced exit."""
        task = asyncio.ensure_future(work)
        while not task.done():
            await asyncio.wait([task], timeout=0.1)
            if self.force_exit:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return
        task.result()

    @contextlib.asynccontextmanager
    async def _keep_notifying(self) -> AsyncIterator[None]:
        """Keep gunicorn's liveness heartbeat going: the main loop that sends it has stopped."""
        notify: Callable[[], Awaitable[None]] | None = self.config.callback_notify
        if notify is None:
            yield
            return

        async def beat() -> None:
            while True:
                await notify()
                await asyncio.sleep(min(1.0, self.config.timeout_notify / 4))

        task = asyncio.create_task(beat(), name="gateway-drain-heartbeat")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
