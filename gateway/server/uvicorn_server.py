"""uvicorn's server, draining the gateway before uvicorn's own connection shutdown.

uvicorn's shutdown sends every WebSocket a bare 1012 at once and only then runs the app's
lifespan shutdown, so a lifespan hook comes too late to drain anything. :class:`DrainingServer`
therefore runs :func:`gateway.drain.drain` at the top of uvicorn's ``shutdown()`` and lets
uvicorn finish afterwards: it closes what is left (idle HTTP keep-alives) and runs the lifespan
shutdown, which closes the broker and presence backends once the last ``left`` event is out.

Every way a worker is told to stop reaches that method: SIGTERM or SIGINT to ``gateway serve``
or to a gunicorn worker, the gunicorn master's TERM to its workers on stop and on HUP reload,
and uvicorn's ``limit_max_requests`` (gunicorn ``max_requests`` recycling).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import FrameType
from typing import Any

import uvicorn

from gateway.drain import drain, shutdown_reserve
from gateway.node import Node


def node_of(app: object) -> Node | None:
    """The gateway node behind an ASGI app, if it is the gateway's."""
    node = getattr(getattr(app, "state", None), "node", None)
    return node if isinstance(node, Node) else None


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
        node = node_of(self.config.app)
        if node is not None and not self.force_exit:
            timeout = node.settings.drain_timeout
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
                    drain(node, deadline=limit - reserve, cut_grace=reserve / 2)
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
