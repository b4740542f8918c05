"""Redis Cluster: the Redis broker with every room on one shard and sharded pub/sub.

A room's sequence, history and channel carry one hash tag (``{room:…}``), so the publish script
runs on the shard owning that slot and publishes there with ``SPUBLISH``: a room's traffic
touches one shard only, and rooms spread over all of them. Workers listen with ``SSUBSCRIBE``
through redis-py's :class:`~redis.asyncio.cluster.ClusterPubSub`, which keeps one connection per
shard a worker needs and moves a channel to its new owner on ``MOVED`` (resharding, failover).

What it does not do is tell us when a shard's messages may have been missed, so this module
keeps the Redis broker's rule: a node that fails the health check (``CLUSTER INFO`` from every
node each second, which must say ``ok``), or a shard that drops one of our channels because
its slot moved away (Redis sends ``sunsubscribe``), makes the broker reconnect: refresh the
slot map, subscribe every channel again on its current owner and replay the rooms from their
streams.

Reading polls the shards' connections in turn (redis-py's design): a publication waits at most
one slice of :data:`POLL` while another shard's connection is being read.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import RedisCluster
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException

from gateway.broker.base import DeliverFn
from gateway.broker.connect import COMMAND_TIMEOUT
from gateway.broker.redis import (
    PING_INTERVAL,
    PUBLISH_SCRIPT,
    RESUBSCRIBE_TIMEOUT,
    RedisBroker,
)

POLL = 0.02
"""Seconds one read waits across all shard connections (split between them)."""
SHARDED_PUBLISH_SCRIPT = PUBLISH_SCRIPT.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")


class ClusterBroker(RedisBroker):
    def __init__(
        self, url: str, deliver: DeliverFn, history_size: int, *, min_replicas: int = 0
    ) -> None:
        if min_replicas:
            raise ValueError("GATEWAY_BROKER_MIN_REPLICAS is not supported on Redis Cluster")
        super().__init__(url, deliver, history_size)
        self.control_channel = f"{self.prefix}:{{control}}"

    def topic(self, channel: str) -> str:
        """The channel's hash tag is its keys' tag: the script may SPUBLISH to it."""
        return f"{self.prefix}:{{{channel}}}"

    async def start(self) -> None:
        await super().start()
        assert self._commands is not None
        self._publish_script = self._commands.register_script(SHARDED_PUBLISH_SCRIPT)

    async def _publish_kept(self, keys: list[str], args: list[Any]) -> Any:
        """One script call each: a pipeline would be split by shard anyway."""
        return await self._publish_script(keys=keys, args=args)

    async def _publish_raw(self, topic: str, data: str) -> None:
        assert self._commands is not None
        await self._commands.spublish(topic, data)

    async def _pubsub_subscribe(self, pubsub: PubSub, *topics: str | bytes) -> None:
        await pubsub.ssubscribe(*topics)

    async def _pubsub_unsubscribe(self, pubsub: PubSub, topic: str) -> None:
        await pubsub.sunsubscribe(topic)

    async def _open(self, pubsub: PubSub) -> list[dict[str, Any]]:
        """Refresh the slot map, subscribe every channel on its shard, replay the rooms."""
        try:
            await self._cluster(self._subscriber).nodes_manager.initialize()
        except RedisClusterException as error:  # no node answered: an outage like any other
            raise RedisConnectionError(str(error)) from error
        await self._ping_all()
        topics = [self.control_channel, *(self.topic(c) for c in sorted(self._channels))]
        self._pubsub = pubsub  # from here on, new interest is subscribed directly
        await pubsub.ssubscribe(*topics)
        waiting = {topic.encode() for topic in topics}
        pending: list[dict[str, Any]] = []
        async with asyncio.timeout(RESUBSCRIBE_TIMEOUT):
            while waiting:
                message = await pubsub.get_sharded_message(timeout=POLL)
                if message is None:
                    continue
                if message["type"] == "ssubscribe":
                    waiting.discard(message["channel"])
                    self._confirm(message["channel"])
                elif message["type"] == "smessage":
                    pending.append(message)
        self._link.hung = False
        await self._catch_up(sorted(self._channels))
        return pending

    async def _read(self, pubsub: PubSub) -> None:
        """Deliver until a shard fails its health check (or every shard connection fails)."""
        clock = asyncio.get_running_loop().time
        next_check = clock() + PING_INTERVAL
        while True:
            message = await pubsub.get_sharded_message(timeout=POLL)
            if message is not None:
                if message["type"] == "smessage":
                    self._on_message(message)
                elif message["type"] == "ssubscribe":
                    self._confirm(message["channel"])
                elif message["type"] == "sunsubscribe" and self._wanted(message["channel"]):
                    # Not ours: the shard gave the slot away (resharding) and dropped us.
                    raise RedisConnectionError(f"{message['channel']!r} moved to another shard")
            if clock() >= next_check:
                await self._ping_all()
                next_check = clock() + PING_INTERVAL

    def _wanted(self, topic: bytes) -> bool:
        return any(self.topic(channel).encode() == topic for channel in self._channels)

    async def _ping_all(self) -> None:
        """Every node answers and says the cluster is ``ok``: a node back from a freeze answers
        PING while the cluster still refuses commands (``CLUSTERDOWN``) for a moment."""
        cluster = self._cluster(self._commands)
        async with asyncio.timeout(COMMAND_TIMEOUT):
            states: Any = await cluster.cluster_info(target_nodes=RedisCluster.ALL_NODES)
        infos = list(states.values()) if all(isinstance(v, dict) for v in states.values()) else []
        for info in infos or [states]:
            state = info.get("cluster_state", info.get(b"cluster_state"))
            if (state.decode() if isinstance(state, bytes) else str(state)) != "ok":
                raise RedisConnectionError("the cluster is down")

    @staticmethod
    def _cluster(client: Any) -> RedisCluster:
        assert isinstance(client, RedisCluster)
        return client
