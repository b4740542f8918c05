"""Per-client message rate limiting on the moving window of the `limits` library.

The seed counted messages per client in a window (10 per 60 s); a moving window keeps that
meaning exactly. The storage URI lets several workers share one budget through Redis.
"""

from __future__ import annotations

from limits import RateLimitItemPerSecond
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from gateway.settings import RateLimit


class MessageRateLimiter:
    def __init__(self, rate: RateLimit, storage_uri: str = "async+memory://") -> None:
        self.enabled = rate.enabled
        self._item = RateLimitItemPerSecond(max(rate.messages, 1), max(rate.window_seconds, 1))
        storage = storage_from_string(storage_uri)
        self._limiter = MovingWindowRateLimiter(storage)

    async def allow(self, client_key: str) -> bool:
        if not self.enabled:
            return True
        return await self._limiter.hit(self._item, "messages", client_key)
