"""What this process knows of each Redis it talks to: answering, or hung.

A hung Redis (stopped, or a peer that keeps the socket open and says nothing) shows on no
socket; only the pub/sub health check notices, by silence. Until it does, every command waits
out its timeout, and a burst of requests also queues for the pool's connections, each held by a
command that will time out. Once it has noticed, those waits buy nothing: the pools of every
client on that Redis fail their commands at once (queued ones included) until the pub/sub
connection hears Redis again.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from redis.asyncio import BlockingConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError


class Link:
    __slots__ = ("hung", "pools")

    def __init__(self) -> None:
        self.hung = False
        self.pools: weakref.WeakSet[HangAwarePool] = weakref.WeakSet()

    async def mark_hung(self) -> None:
        """From now on commands fail at once; those waiting for a connection fail now too."""
        self.hung = True
        for pool in list(self.pools):
            await pool.wake_waiters()


_LINKS: dict[str, Link] = {}


def link(address: str) -> Link:
    """The one :class:`Link` of this process for the Redis (server or Sentinel service, and
    database) that ``address`` names (:attr:`gateway.broker.urls.BrokerURL.address`)."""
    return _LINKS.setdefault(address, Link())


class HangAwarePool(BlockingConnectionPool):
    """A blocking pool whose commands, waiting or new, fail at once while its Redis is hung."""

    def __init__(self, *args: Any, link: Link, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.link = link
        link.pools.add(self)

    def can_get_connection(self) -> bool:
        return self.link.hung or bool(super().can_get_connection())

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        """Checked before and after the wait: redis-py's wait takes a connection past any
        override of the pool's other methods, and a woken waiter must not use it."""
        if self.link.hung:
            raise RedisConnectionError("redis is not answering")
        try:
            connection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except MaxConnectionsError:
            if not self.link.hung:
                raise
            raise RedisConnectionError("redis is not answering") from None
        if self.link.hung:
            await self.release(connection)
            raise RedisConnectionError("redis is not answering")
        return connection

    async def wake_waiters(self) -> None:
        """Waiters check :meth:`can_get_connection` again (redis-py keeps its condition private)."""
        condition: asyncio.Condition | None = getattr(self, "_condition", None)
        if condition is not None:
            async with condition:
                condition.notify_all()
