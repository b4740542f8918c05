"""Redis fan-out: a room's id, its bounded history and live delivery in one atomic step.

Publishing a kept message runs one Lua script, after Centrifugo's Redis engine: HINCRBY the
room's sequence, XADD the envelope to the room's stream under the explicit id ``0-<seq>`` (exact
MAXLEN), PUBLISH ``<seq>:<envelope>``. Redis runs scripts one at a time, so ids are ordered per
room across every worker and host, and every subscriber hears a room in id order. A room's
sequence starts from Redis' clock (milliseconds x 1000) whenever its meta key is created, so ids
keep growing after Redis loses its data: sessions still holding an old id would otherwise drop
the renumbered messages as already seen.

One pub/sub connection per worker follows local interest. A supervisor task owns it: on any
error it marks the broker unready, reconnects with capped, jittered backoff, subscribes every
channel again and replays from the streams what the rooms received meanwhile (deduplicated by
id), so a Redis hiccup costs neither a subscription nor a kept message.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway import metrics
from gateway.broker.base import Broker, BrokerUnavailable, DeliverFn, Envelope, History
from gateway.broker.buffered import buffered_replies
from gateway.broker.connect import (
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    POOL_SIZE,
    POOL_TIMEOUT,
    UNAVAILABLE,
    connect,
    connection_pool,
    link_of,
    split_url,
)
from gateway.broker.durable import DurablePublisher
from gateway.broker.pipelining import Pipeliner

__all__ = [
    "COMMAND_TIMEOUT",
    "POOL_SIZE",
    "POOL_TIMEOUT",
    "UNAVAILABLE",
    "RedisBroker",
    "connect",
    "connection_pool",
    "split_url",
]

log = logging.getLogger("gateway.broker")

HISTORY_TTL = 7 * 24 * 3600
"""Seconds a room's sequence and history outlive its last publication."""
PING_INTERVAL = 1.0
"""Seconds of pub/sub silence before a PING."""
PONG_TIMEOUT = 1.0
"""Seconds after that PING without a word from Redis that count as a dead link."""
RESUBSCRIBE_TIMEOUT = 5.0
"""Seconds a reconnect may take to have every channel confirmed (no request waits on it)."""
BACKOFF_BASE = 0.1
BACKOFF_CAP = 5.0
DRAIN_LIMIT = 1024
"""Publications handed to the hub per read of what the pub/sub parser already holds."""
PUBLISH_SCRIPT = """
local meta, stream = KEYS[1], KEYS[2]
local seq
if redis.call('EXISTS', meta) == 1 then
  seq = redis.call('HINCRBY', meta, 's', 1)
else
  local now = redis.call('TIME')
  local base = tonumber(now[1]) * 1000000 + math.floor(tonumber(now[2]) / 1000) * 1000
  seq = base + 1
  redis.call('HSET', meta, 'b', string.format('%.0f', base), 's', string.format('%.0f', seq))
end
local id = string.format('%.0f', seq)
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', stream, 'MAXLEN', ARGV[3], '0-' .. id, 'd', ARGV[2])
  redis.call('EXPIRE', stream, ARGV[4])
end
redis.call('EXPIRE', meta, ARGV[4])
redis.call('PUBLISH', ARGV[1], id .. ':' .. ARGV[2])
return id
"""
PUT_IF_ABSENT_SCRIPT = """
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""
"""SET NX and GET in one step (``SET NX GET`` needs Redis 7; this works on 6.2)."""
DELETE_IF_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisBroker(Broker):
    def __init__(
        self, url: str, deliver: DeliverFn, history_size: int, *, min_replicas: int = 0
    ) -> None:
        super().__init__(deliver, history_size)
        self.url, self.prefix = split_url(url)
        self.min_replicas = min_replicas
        self._durable: DurablePublisher | None = None
        self._top = "p" if min_replicas else "s"
        """The meta field naming a room's newest id readers may see: with replicas to wait
        for, the newest *published* one (see :mod:`gateway.broker.durable`)."""
        self._commands: Redis | None = None
        self._subscriber: Redis | None = None
        self._publish_script: Any = None
        self._publisher: Pipeliner | None = None
        self._store_scripts: dict[str, Any] = {}
        self._channels: set[str] = set()
        """Channels with local interest: what the pub/sub connection must hear."""
        self._last_seq: dict[str, int] = {}
        """Highest id delivered per subscribed room, to replay what an outage hid, once."""
        self._pubsub: PubSub | None = None
        self._confirmations: dict[bytes, list[asyncio.Future[None]]] = {}
        """Joins waiting for Redis to confirm their SUBSCRIBE (see :meth:`subscribe`)."""
        self._supervisor: asyncio.Task[None] | None = None
        self._first_attempt = asyncio.Event()
        self._link = link_of(self.url)
        self._ready = False
        self._closing = False
        self._tokens = itertools.count(1)
        self.control_channel = f"{self.prefix}:control"

    # Keys

    def topic(self, channel: str) -> str:
        return f"{self.prefix}:{channel}"

    def keys(self, channel: str) -> tuple[str, str]:
        """The room's meta hash and stream, hash-tagged so a cluster keeps them together."""
        tag = f"{self.prefix}:{{{channel}}}"
        return f"{tag}:meta", f"{tag}:stream"

    def durable_keys(self, channel: str) -> list[str]:
        """Meta, stream and the messages stored but not yet published (same hash tag)."""
        return [*self.keys(channel), f"{self.prefix}:{{{channel}}}:pending"]

    # Lifecycle

    async def start(self) -> None:
        self._commands = connect(self.url, retries=1)
        self._subscriber = connect(self.url, retries=0, hang_aware=False)
        self._publish_script = self._commands.register_script(PUBLISH_SCRIPT)
        self._publisher = Pipeliner(self._commands, {self._publish_script.sha: PUBLISH_SCRIPT})
        for name, source in (("put", PUT_IF_ABSENT_SCRIPT), ("delete", DELETE_IF_SCRIPT)):
            self._store_scripts[name] = self._commands.register_script(source)
        if self.min_replicas:
            self._durable = DurablePublisher(
                self._commands, self.min_replicas, self.history_size, HISTORY_TTL
            )
        metrics.BROKER_UP.set(0)
        self._supervisor = asyncio.create_task(self._supervise(), name="gateway-redis-pubsub")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CONNECT_TIMEOUT + COMMAND_TIMEOUT):
                await self._first_attempt.wait()

    async def aclose(self) -> None:
        self._closing = True
        if self._durable is not None:
            await self._durable.aclose()
        if self._publisher is not None:
            await self._publisher.aclose()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        self._set_ready(False)
        for client in (self._commands, self._subscriber):
            if client is not None:
                with contextlib.suppress(*UNAVAILABLE):
                    await client.aclose()

    @property
    def ready(self) -> bool:
        return self._ready

    def _set_ready(self, ready: bool) -> None:
        if ready != self._ready and not self._closing:
            log.info("redis broker %s", "connected" if ready else "unavailable")
        self._ready = ready
        metrics.BROKER_UP.set(1 if ready else 0)

    # Publishing and history

    async def publish(self, envelope: Envelope, *, keep: bool) -> Envelope:
        if self._commands is None:
            raise BrokerUnavailable("broker not started")
        payload = envelope.dumps()
        topic = self.topic(envelope.channel)
        try:
            if keep and self._durable is not None:
                keys = self.durable_keys(envelope.channel)
                envelope.seq = await self._durable.publish(keys, topic, payload)
                envelope.event["id"] = str(envelope.seq)
            elif keep:
                raw = await self._publish_kept(
                    list(self.keys(envelope.channel)),
                    [topic, payload, self.history_size, HISTORY_TTL],
                )
                envelope.seq = int(raw)
                envelope.event["id"] = str(envelope.seq)
            else:
                await self._publish_raw(topic, "0:" + payload)
        except UNAVAILABLE as error:
            raise BrokerUnavailable(f"redis: {error}") from error
        return envelope

    async def history(self, channel: str, after: int) -> History:
        if self._commands is None:
            raise BrokerUnavailable("broker not started")
        meta, stream = self.keys(channel)
        try:
            async with self._commands.pipeline(transaction=True) as pipe:
                pipe.hmget(meta, ["b", self._top])
                pipe.xrange(stream, "-", "+", count=1)
                pipe.xrange(stream, f"(0-{after}", "+")
                (base_raw, top_raw), oldest, entries = await pipe.execute()
        except UNAVAILABLE as error:
            raise BrokerUnavailable(f"redis: {error}") from error
        if top_raw is None:
            return History([], complete=after == 0)
        base, top = int(base_raw), int(top_raw)
        messages = [
            _envelope(seq, fields[b"d"])
            for seq, fields in ((_stream_seq(entry_id), fields) for entry_id, fields in entries)
            if seq <= top
        ]
        first = _stream_seq(oldest[0][0]) if oldest else top + 1
        if after >= top:
            complete = True
        elif after == 0 or after >= base:
            complete = first <= max(after, base) + 1
        else:
            complete = False  # an id from before Redis lost the room's data
        return History(messages, complete)

    async def last_id(self, channel: str) -> int:
        if self._commands is None:
            raise BrokerUnavailable("broker not started")
        try:
            raw = await self._commands.hget(self.keys(channel)[0], self._top)
        except UNAVAILABLE as error:
            raise BrokerUnavailable(f"redis: {error}") from error
        return int(raw) if raw is not None else 0

    # The shared store

    def store_key(self, key: str) -> str:
        return f"{self.prefix}:store:{key}"

    async def put_if_absent(self, key: str, value: str, ttl: float) -> str | None:
        held = await self._store("put", key, value, max(int(ttl * 1000), 1))
        return None if held is None else bytes(held).decode()

    async def put(self, key: str, value: str, ttl: float) -> None:
        if self._commands is None:
            raise BrokerUnavailable("broker not started")
        try:
            await self._commands.set(self.store_key(key), value, px=max(int(ttl * 1000), 1))
        except UNAVAILABLE as error:
            raise BrokerUnavailable(f"redis: {error}") from error

    async def delete_if(self, key: str, value: str) -> None:
        await self._store("delete", key, value)

    async def _store(self, script: str, key: str, *args: object) -> Any:
        if self._commands is None:
            raise BrokerUnavailable("broker not started")
        try:
            return await self._store_scripts[script](keys=[self.store_key(key)], args=list(args))
        except UNAVAILABLE as error:
            raise BrokerUnavailable(f"redis: {error}") from error

    # Subscriptions

    async def subscribe(self, channel: str) -> None:
        """Returns once Redis confirms the subscription, so whatever is published after a join
        reaches the new member (and a resume's history read leaves no gap before live
        delivery). Never raises: while Redis is away the interest is kept and subscribed again
        on reconnect."""
        self._channels.add(channel)
        pubsub = self._pubsub
        if pubsub is None:
            return
        topic = self.topic(channel).encode()
        confirmed = asyncio.get_running_loop().create_future()
        waiting = self._confirmations.setdefault(topic, [])
        waiting.append(confirmed)
        try:
            await self._pubsub_subscribe(pubsub, topic)
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await confirmed
        except UNAVAILABLE:
            pass
        finally:
            waiting.remove(confirmed)
            if not waiting:
                self._confirmations.pop(topic, None)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        self._last_seq.pop(channel, None)
        pubsub = self._pubsub
        if pubsub is not None:
            with contextlib.suppress(*UNAVAILABLE):
                await self._pubsub_unsubscribe(pubsub, self.topic(channel))

    # What a cluster does differently (see gateway.broker.cluster)

    async def _publish_kept(self, keys: list[str], args: list[Any]) -> Any:
        """The publish script, pipelined with others (:mod:`gateway.broker.pipelining`)."""
        assert self._publisher is not None
        sha = self._publish_script.sha
        return await self._publisher.call("EVALSHA", sha, len(keys), *keys, *args)

    async def _publish_raw(self, topic: str, data: str) -> None:
        assert self._publisher is not None
        await self._publisher.call("PUBLISH", topic, data)

    async def _pubsub_subscribe(self, pubsub: PubSub, *topics: str | bytes) -> None:
        await pubsub.subscribe(*topics)

    async def _pubsub_unsubscribe(self, pubsub: PubSub, topic: str) -> None:
        await pubsub.unsubscribe(topic)

    # The pub/sub connection

    async def _supervise(self) -> None:
        attempt = 0
        while not self._closing:
            assert self._subscriber is not None
            pubsub = self._subscriber.pubsub()
            try:
                pending = await self._open(pubsub)
                self._set_ready(True)
                self._first_attempt.set()
                attempt = 0
                for message in pending:
                    self._on_message(message)
                await self._read(pubsub)
            except UNAVAILABLE as error:
                if isinstance(error, RedisTimeoutError | TimeoutError):
                    await self._link.mark_hung()
                if self._ready or attempt == 0:
                    log.warning("redis pub/sub connection lost: %s", error)
            except Exception:
                log.exception("redis pub/sub reader failed; reconnecting")
            finally:
                self._pubsub = None
                self._set_ready(False)
                self._confirm_all()
                self._first_attempt.set()
                with contextlib.suppress(*UNAVAILABLE):
                    await pubsub.aclose()
            if not self._closing:
                await self._backoff(attempt)
                attempt += 1

    async def _backoff(self, attempt: int) -> None:
        """Capped exponential delay with jitter, so a fleet does not reconnect in lockstep."""
        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempt, 16))
        await asyncio.sleep(random.uniform(delay / 2, delay))

    async def _open(self, pubsub: PubSub) -> list[dict[str, Any]]:
        """Subscribe every channel of interest and replay what the rooms got meanwhile.

        Returns the live messages that arrived while the replay was read; the caller delivers
        them after it (older ids are dropped there as already delivered).
        """
        await pubsub.subscribe(self.control_channel)
        self._pubsub = pubsub  # from here on, new interest is subscribed directly
        channels = sorted(self._channels)
        if channels:
            await pubsub.subscribe(*(self.topic(channel) for channel in channels))
        pending = await self._sync(pubsub)
        await self._catch_up(channels)
        return pending

    async def _sync(self, pubsub: PubSub) -> list[dict[str, Any]]:
        """Wait until Redis has applied the subscriptions (a PING's reply follows them)."""
        token = f"sync-{next(self._tokens)}".encode()
        await pubsub.ping(token)
        pending: list[dict[str, Any]] = []
        async with asyncio.timeout(RESUBSCRIBE_TIMEOUT):
            while True:
                message = await pubsub.get_message(timeout=RESUBSCRIBE_TIMEOUT)
                if message is None:
                    continue
                if message["type"] == "pong" and message["data"] == token:
                    self._link.hung = False
                    return pending
                if message["type"] == "message":
                    pending.append(message)
                elif message["type"] == "subscribe":
                    self._confirm(message["channel"])

    async def _catch_up(self, channels: list[str]) -> None:
        rooms = [channel for channel in channels if self._last_seq.get(channel)]
        if not rooms or self._commands is None:
            return
        # Not a transaction (a cluster's rooms live on several shards): reading each room's top
        # before its stream is enough, since everything up to a top read is published.
        async with self._commands.pipeline(transaction=False) as pipe:
            for channel in rooms:
                meta, stream = self.keys(channel)
                pipe.hget(meta, self._top)
                pipe.xrange(stream, f"(0-{self._last_seq[channel]}", "+")
            results = await pipe.execute()
        replayed = 0
        for top_raw, entries in zip(results[::2], results[1::2], strict=True):
            top = int(top_raw or 0)
            for entry_id, fields in entries:
                seq = _stream_seq(entry_id)
                if seq <= top:  # above it: stored, not yet confirmed (it is published later)
                    replayed += self._accept(_envelope(seq, fields[b"d"]))
        if replayed:
            log.info("replayed %d messages published while pub/sub was down", replayed)

    async def _read(self, pubsub: PubSub) -> None:
        """Deliver until the link fails. A hung Redis keeps its socket open, so silence is the
        only sign: after :data:`PING_INTERVAL` of it a PING, and nothing at all from Redis
        within :data:`PONG_TIMEOUT` after that is a dead link (about 2 s in all)."""
        clock = asyncio.get_running_loop().time
        heard = clock()
        pinged = False
        while True:
            deadline = heard + PING_INTERVAL + (PONG_TIMEOUT if pinged else 0.0)
            message = await pubsub.get_message(timeout=max(deadline - clock(), 0.01))
            if message is None:
                if clock() < deadline:
                    continue
                if pinged:
                    raise RedisTimeoutError("no reply from redis to a pub/sub PING")
                await pubsub.ping()
                pinged = True
                continue
            heard, pinged = clock(), False
            self._on_reply(message)
            await self._drain(pubsub)

    def _on_reply(self, message: dict[str, Any]) -> None:
        if message["type"] == "message":
            self._on_publication(message["channel"], message["data"])
        elif message["type"] == "subscribe":
            self._confirm(message["channel"])

    async def _drain(self, pubsub: PubSub) -> None:
        """Deliver what the connection already read after that message, in this same tick (the
        hub's write corking then combines them per socket), without a ``get_message`` each."""
        for reply in buffered_replies(pubsub, DRAIN_LIMIT):
            if type(reply) is list and len(reply) == 3 and reply[0] == b"message":
                self._on_publication(reply[1], reply[2])
                continue
            if isinstance(reply, Exception):
                raise reply
            message = await pubsub.handle_message(reply)  # type: ignore[no-untyped-call]
            if message is not None:
                self._on_reply(message)

    def _confirm(self, topic: bytes) -> None:
        for confirmed in self._confirmations.get(topic, ()):
            if not confirmed.done():
                confirmed.set_result(None)

    def _confirm_all(self) -> None:
        """The connection is gone: nobody should wait for it (the next one resubscribes)."""
        for topic in list(self._confirmations):
            self._confirm(topic)

    def _on_message(self, message: dict[str, Any]) -> None:
        self._on_publication(message.get("channel"), message["data"])

    def _on_publication(self, topic: object, data: bytes) -> None:
        seq, _, payload = data.partition(b":")
        try:
            envelope = _envelope(int(seq), payload)
        except (ValueError, KeyError, TypeError):
            log.exception("undecodable publication on %r", topic)
            return
        self._accept(envelope)

    def _accept(self, envelope: Envelope) -> int:
        """Deliver unless the channel lost interest or this id was delivered already."""
        channel = envelope.channel
        if channel not in self._channels:
            return 0
        if envelope.seq:
            if envelope.seq <= self._last_seq.get(channel, 0):
                return 0
            self._last_seq[channel] = envelope.seq
        try:
            self.deliver(envelope)
        except Exception:
            log.exception("local delivery failed on %s", channel)
        return 1


def _stream_seq(entry_id: bytes) -> int:
    return int(entry_id.rpartition(b"-")[2])


def _envelope(seq: int, payload: bytes) -> Envelope:
    envelope = Envelope.loads(payload)
    envelope.seq = seq
    if seq:
        envelope.event["id"] = str(seq)
    return envelope
