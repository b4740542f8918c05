"""Rate limits: chat messages per client (shared by the workers), handshakes per IP (per
worker), and commands per connection.

The seed counted messages per client in a window (10 per 60 s); the moving window of the
`limits` library keeps that meaning exactly, and its Redis storage lets several workers share
one budget. Commands (join, leave, resume, ping) are limited per connection, in-process: a
:class:`CommandBudget` is a few numbers on the session, with no round trip to anything.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

from limits import RateLimitItemPerSecond
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from gateway.settings import RateLimit

log = logging.getLogger("gateway.ratelimit")


class CommandBudget:
    """``rate.messages`` commands per ``rate.window_seconds`` for one connection, in constant
    memory: a sliding-window counter (this window's count plus the previous window's, weighted
    by how much of that window the sliding one still covers). A moving window would keep a
    timestamp per admitted command; this keeps three numbers, never admits more than the limit
    within one of the connection's consecutive windows, and about the limit in any other."""

    __slots__ = ("_current", "_limit", "_previous", "_start", "_window")

    def __init__(self, rate: RateLimit, now: float) -> None:
        self._limit = rate.messages
        self._window = float(rate.window_seconds)
        self._start = now
        self._current = 0
        self._previous = 0

    def allow(self, now: float) -> bool:
        elapsed = now - self._start
        if elapsed >= self._window:
            passed = int(elapsed // self._window)
            self._previous = self._current if passed == 1 else 0
            self._current = 0
            self._start += passed * self._window
            elapsed -= passed * self._window
        overlap = 1.0 - elapsed / self._window
        if self._previous * overlap + self._current >= self._limit:
            return False
        self._current += 1
        return True


class MovingWindowLimiter:
    """``rate`` hits per key on the `limits` library's moving window.

    ``storage_url`` ``memory://`` keeps the window in this process; a Redis broker URL shares it
    with every worker and host (the chat message budget). A storage that cannot be reached
    admits: for messages, the publish that follows fails with an error frame anyway, so
    admitting loses nothing and drops no connection.
    """

    def __init__(self, rate: RateLimit, namespace: str, storage_url: str = "memory://") -> None:
        self.enabled = rate.enabled
        self.namespace = namespace
        self.window = max(rate.window_seconds, 1)
        self._item = RateLimitItemPerSecond(max(rate.messages, 1), self.window)
        self._pool: Any = None
        self._store: Any = None
        self._limiter = MovingWindowRateLimiter(self._storage(storage_url))

    async def allow(self, key: str) -> bool:
        if not self.enabled:
            return True
        try:
            return await self._limiter.hit(self._item, self.namespace, key)
        except StorageError as error:
            log.debug("rate limit storage unavailable: %s", error.storage_error)
            return True

    async def retry_after(self, key: str) -> int:
        """Seconds until ``key`` may hit again (1 at least, the window at most)."""
        stats = await self._limiter.get_window_stats(self._item, self.namespace, key)
        return max(1, min(self.window, round(stats.reset_time - time.time())))

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.disconnect()
        # `limits` has no close: its sentinel storage holds a master client, a replica client
        # and the Sentinel's own clients, its cluster storage a cluster client, each with
        # connections to give back.
        bridge: Any = getattr(self._store, "bridge", None)
        sentinel = getattr(bridge, "sentinel", None)
        if sentinel is not None:
            for redis_client in (bridge.storage, bridge.storage_replica):
                await redis_client.aclose()
            await sentinel.aclose()
        elif self._pool is None and getattr(bridge, "storage", None) is not None:
            await bridge.storage.aclose()

    def _storage(self, storage_url: str) -> Any:
        if urlsplit(storage_url).scheme == "memory":
            return storage_from_string("async+memory://")
        from gateway.broker.connect import limits_storage, split_url

        url, prefix = split_url(storage_url)
        # With one Redis, our own pool, bounded and failing fast like the broker's clients;
        # with Sentinel or Cluster, the library's own storage. Either is closed by aclose.
        uri, options = limits_storage(url)
        self._pool = options.get("connection_pool")
        self._store = storage_from_string(
            uri,
            implementation="redispy",
            key_prefix=f"{prefix}:ratelimit",
            wrap_exceptions=True,
            **options,
        )
        return self._store


def message_limiter(rate: RateLimit, broker_url: str = "memory://") -> MovingWindowLimiter:
    """Chat messages per client: with Redis, every worker and host draws on one budget."""
    return MovingWindowLimiter(rate, "messages", broker_url)


def connect_limiter(rate: RateLimit) -> MovingWindowLimiter:
    """Handshakes per client IP, per worker and in memory on purpose: the handshake path stays
    free of network round trips, and the limit guards this worker's accept loop, which is what a
    connection flood exhausts."""
    return MovingWindowLimiter(rate, "connect")
