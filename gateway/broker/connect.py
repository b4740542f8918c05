"""The Redis clients every part of the gateway opens, whatever topology the URL names.

The broker, presence (and id claims) each take a client from :func:`connect`; the rate limit
takes the `limits` storage from :func:`limits_storage`. Behind ``redis://`` that is a pool on
one server; behind ``redis+sentinel://`` it is redis-py's own Sentinel client
(:meth:`~redis.asyncio.sentinel.Sentinel.master_for`): each new connection asks the sentinels
for the current primary, and a connection to a demoted one (``READONLY``) is dropped, so after a
failover every client finds the new primary by itself. Both kinds keep the same bounds: a
blocking pool, short timeouts, fail fast while Redis is known to hang (:mod:`.links`).
"""

from __future__ import annotations

import importlib.util
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    ReadOnlyError,
    RedisClusterException,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.broker.links import HangAwarePool, Link, link
from gateway.broker.urls import BrokerURL, parse, split_url

__all__ = [
    "COMMAND_TIMEOUT",
    "CONNECT_TIMEOUT",
    "POOL_SIZE",
    "POOL_TIMEOUT",
    "UNAVAILABLE",
    "connect",
    "connection_pool",
    "limits_storage",
    "link_of",
    "split_url",
]

CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 2.0
"""Seconds a command waits for Redis' answer. A hung Redis (stopped, not closed) shows on no
socket, only on this clock: a request fails within one of these (SPEC: 3 s). A request's later
commands fail at once, since by then the pub/sub health check has found the hang (see
:mod:`gateway.broker.links`). Two seconds leave a busy, live Redis room to answer."""
SENTINEL_TIMEOUT = 0.5
"""Seconds to wait for one sentinel's answer before asking the next: a dead sentinel must not
hold up finding the primary."""
POOL_SIZE = 50
"""Connections one client (pool) of a worker may open. A worker has three: broker commands,
presence and the rate limit (plus one pub/sub connection), so a fleet of W workers holds at most
about 150 x W of Redis' 10,000 default ``maxclients``. ``?max_connections=`` in the URL wins."""
POOL_TIMEOUT = 5.0
"""Seconds a command waits for a free pooled connection before it counts as Redis being
unavailable: as long as a connect storm may queue on a live Redis (at 1 s, a storm of 360
handshakes on a loaded 2-core machine had hundreds refused). A hung Redis does not keep waiters
that long: see :mod:`gateway.broker.links`. ``?timeout=`` in the URL wins."""
NO_SETINFO: dict[str, Any] = (
    {"driver_info": None}
    if importlib.util.find_spec("redis.driver_info")
    else {"lib_name": None, "lib_version": None}
)
"""No CLIENT SETINFO on connect (redis-py 8 spells it ``driver_info``): each reply is one more
timeout to wait out on a new connection to a hung Redis, before the command itself."""
UNAVAILABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    OSError,
    ClusterDownError,
    TryAgainError,
    RedisClusterException,
)
"""Errors that mean "Redis cannot be reached now" (``TimeoutError`` is an ``OSError``; Sentinel's
``MasterNotFoundError`` is a ``ConnectionError``; a cluster missing a shard answers
``CLUSTERDOWN``, one resharding a multi-key slot ``TRYAGAIN``, and redis-py raises
``RedisClusterException`` when no node answers or a slot has no owner)."""
URL_OPTIONS: dict[str, type[int] | type[float]] = {
    "max_connections": int,
    "timeout": float,
    "socket_timeout": float,
    "socket_connect_timeout": float,
}
"""redis-py URL options a sentinel URL may carry too (redis-py parses them for ``redis://``)."""


class SentinelPool(SentinelConnectionPool, HangAwarePool):
    """redis-py's Sentinel pool, blocking and hang-aware like the plain one; it owns the
    :class:`~redis.asyncio.sentinel.Sentinel` that made it and closes it with itself."""

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self.sentinel_manager.aclose()


class SentinelSubscriberPool(SentinelConnectionPool, BlockingConnectionPool):
    """The pub/sub connection's pool: it must reconnect even while commands fail fast."""

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self.sentinel_manager.aclose()


def link_of(url: str) -> Link:
    return link(parse(url).address)


def connection_pool(url: str, *, retries: int, hang_aware: bool = True) -> BlockingConnectionPool:
    """A bounded pool whose commands queue for a connection when all are busy.

    redis-py's default pool raises ``Too many connections`` at once when its 100 connections
    are checked out, which a storm of a few hundred handshakes per worker (each awaiting
    several commands) reaches: connections were refused with 1011. Here a command waits up to
    :data:`POOL_TIMEOUT` for a connection instead, and Redis sees at most :data:`POOL_SIZE`
    connections per pool however many handshakes are in flight.

    Otherwise it fails fast: the gateway reports an outage rather than hanging in retries. One
    immediate retry lets a pooled connection that Redis closed (a restart, a failover)
    reconnect; a timeout is not retried, since a Redis that did not answer once will not answer
    at once either. While the pub/sub health check finds Redis hung, commands fail at once
    (``hang_aware``). ``url`` carries no ``prefix`` (see :func:`split_url`).
    """
    target = parse(url)
    if target.cluster:
        raise ValueError("a cluster has a pool per node: use connect()")
    options = _pool_options(retries)
    if target.sentinel:
        return _sentinel_pool(target, options, hang_aware)
    if hang_aware:
        return HangAwarePool.from_url(target.url, link=link(target.address), **options)
    return BlockingConnectionPool.from_url(target.url, **options)


def connect(url: str, *, retries: int, hang_aware: bool = True) -> Redis:
    """A client on its own :func:`connection_pool`, closed with the client.

    For ``redis+cluster://`` it is a :class:`~redis.asyncio.cluster.RedisCluster` (typed as
    ``Redis`` for the commands both share): it routes each command to the shard owning its
    key's slot, follows ``MOVED``/``ASK``, and keeps a pool per node. It is not hang-aware."""
    target = parse(url)
    if target.cluster:
        return cast(Redis, cluster_client(target, retries))
    return Redis.from_pool(connection_pool(url, retries=retries, hang_aware=hang_aware))


def cluster_client(target: BrokerURL, retries: int) -> RedisCluster:
    options: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": COMMAND_TIMEOUT,
        "max_connections": POOL_SIZE,
        **_url_options(target),
    }
    options.pop("timeout", None)  # the cluster's node pools do not block
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.hosts],
        username=target.username,
        password=target.password,
        retry=Retry(NoBackoff(), retries, supported_errors=(RedisConnectionError,)),
        **NO_SETINFO,
        **options,
    )


def limits_storage(url: str) -> tuple[str, dict[str, Any]]:
    """The `limits` storage URI and options for ``url`` (without ``prefix``).

    A plain Redis gets a pool of ours (the caller closes it); Sentinel uses the library's own
    ``redis+sentinel://`` storage, which builds its own :class:`Sentinel` and master client.
    """
    target = parse(url)
    if not (target.sentinel or target.cluster):
        return f"async+{target.url}", {"connection_pool": connection_pool(url, retries=1)}
    hosts = ",".join(f"{host}:{port}" for host, port in target.hosts)
    auth = {"username": target.username, "password": target.password}
    auth = {key: value for key, value in auth.items() if value}
    if target.cluster:
        cluster_options: dict[str, Any] = {
            "socket_timeout": COMMAND_TIMEOUT,
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "max_connections": POOL_SIZE,
            **auth,
            **_url_options(target),
        }
        cluster_options.pop("timeout", None)
        return f"async+redis+cluster://{hosts}", cluster_options
    options: dict[str, Any] = {
        "service_name": target.service,
        "use_replicas": False,
        "db": target.db,
        "socket_timeout": COMMAND_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "max_connections": POOL_SIZE,
        "sentinel_kwargs": {
            **auth,
            "socket_timeout": SENTINEL_TIMEOUT,
            "socket_connect_timeout": SENTINEL_TIMEOUT,
        },
        **auth,
        **_url_options(target),
    }
    options.pop("timeout", None)  # a blocking pool's wait: the library's pool does not block
    return f"async+redis+sentinel://{hosts}", options


def _pool_options(retries: int) -> dict[str, Any]:
    return dict(
        max_connections=POOL_SIZE,
        timeout=POOL_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=COMMAND_TIMEOUT,
        retry=Retry(NoBackoff(), retries, supported_errors=(RedisConnectionError,)),
        **NO_SETINFO,
    )


def _url_options(target: BrokerURL) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, value in target.options:
        if key not in URL_OPTIONS:
            raise ValueError(f"unsupported option {key!r} in a {target.scheme} URL")
        options[key] = URL_OPTIONS[key](value)
    return options


def _sentinel_pool(
    target: BrokerURL, options: dict[str, Any], hang_aware: bool
) -> BlockingConnectionPool:
    auth = {"username": target.username, "password": target.password}
    manager = Sentinel(
        list(target.hosts),
        sentinel_kwargs={
            **{key: value for key, value in auth.items() if value},
            "socket_timeout": SENTINEL_TIMEOUT,
            "socket_connect_timeout": SENTINEL_TIMEOUT,
            **NO_SETINFO,
        },
    )
    kwargs: dict[str, Any] = {**options, **auth, "db": target.db, **_url_options(target)}
    if hang_aware:
        kwargs["link"] = link(target.address)
        pool_class: type[SentinelConnectionPool] = SentinelPool
    else:
        pool_class = SentinelSubscriberPool
    client = manager.master_for(target.service, connection_pool_class=pool_class, **kwargs)
    pool: BlockingConnectionPool = client.connection_pool
    return pool
