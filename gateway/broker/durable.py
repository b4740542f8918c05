"""Publishing that waits for replicas (``GATEWAY_BROKER_MIN_REPLICAS``): store, ``WAIT``, fan out.

A failover promotes a replica; whatever the old primary had not passed on is gone. So a kept
message is first *stored* without being published (one script: the room's next id, the history
stream, and the room's pending hash), then ``WAIT N`` on the same connection (pipelined with the
store: one round trip, plus however long the replicas take to confirm). Only when N replicas
hold it is it *acknowledged* and *committed*: a second script marks it confirmed and publishes,
in id order, every confirmed message at the head of the room's pending queue, advancing the
room's ``p`` (newest published id). Readers (history, ``last_id``, a worker's catch-up after a
reconnect) stop at ``p``. Hence:

- A message any client saw was confirmed by N replicas first, and so was everything it
  followed: a failover to the most advanced replica (Sentinel's choice) keeps it.
- An id is never reused for another text: a client only ever sees ids up to ``p``, and the
  replicated sequence is at least that. An id a failover lost was never shown to anyone; the
  new primary hands it out again.
- Concurrent publishers of one room commit out of order, yet subscribers hear ids in order,
  each once: publishing happens only as ``p`` advances over a contiguous run.

A ``WAIT`` that times out (fewer than N replicas answered within :data:`WAIT_TIMEOUT`) means
"not known to be safe": the message is withdrawn (deleted from the stream and the pending hash,
so ``p`` skips its id) and the sender gets ``unavailable``. Its id is spent: a retry gets a new
one. Each stored message carries a token of its publisher's, so a withdrawal or confirmation
after a failover never touches another message that the new primary gave the same id.

If the primary dies before the withdrawal reaches a replica that did receive the message, it
can reappear after the failover, and a publish interrupted by a broken connection has the same
unknown outcome (it may be delivered even though its sender got an error); so does one whose
process stalls for longer than :data:`STALE` between its WAIT and its withdrawal. Such an
orphan (pending, unresolved for :data:`STALE`) is published by the next confirmed publisher
behind it, never dropped: its confirmation may be what a failover lost, after clients saw it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from gateway.broker.base import BrokerUnavailable
from gateway.broker.connect import UNAVAILABLE

log = logging.getLogger("gateway.broker")

WAIT_TIMEOUT = 1.0
"""Seconds a publish waits for the replicas' confirmation before it is refused."""
STALE = 5.0
"""Seconds after which a stored message nobody confirmed or withdrew counts as orphaned."""
FOLLOW_UP = 30.0
"""Seconds an acknowledged publisher keeps pushing its room's queue forward (an orphan ahead of
it, a failover between its WAIT and its commit) before it leaves that to later publishers."""

_NOW_MS = (
    "local now = redis.call('TIME') "
    "local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) "
)
STORE_SCRIPT = (
    _NOW_MS
    + """
local meta, stream, pending = KEYS[1], KEYS[2], KEYS[3]
local seq
if redis.call('EXISTS', meta) == 1 then
  if redis.call('HEXISTS', meta, 'c') == 0 then
    local s = redis.call('HGET', meta, 's')
    redis.call('HSET', meta, 'c', s, 'p', s)
  end
  seq = redis.call('HINCRBY', meta, 's', 1)
else
  local base = string.format('%.0f', tonumber(now[1]) * 1000000 + math.floor(ms % 1000) * 1000)
  seq = tonumber(base) + 1
  redis.call('HSET', meta, 'b', base, 's', string.format('%.0f', seq), 'c', base, 'p', base)
end
local id = string.format('%.0f', seq)
if tonumber(ARGV[2]) > 0 then
  redis.call('XADD', stream, 'MAXLEN', ARGV[2], '0-' .. id, 'd', ARGV[1])
  redis.call('EXPIRE', stream, ARGV[3])
end
redis.call('HSET', pending, id, ms .. '|' .. ARGV[4] .. '|' .. ARGV[1])
redis.call('EXPIRE', pending, ARGV[3])
redis.call('EXPIRE', meta, ARGV[3])
return id
"""
)
ADVANCE_SCRIPT = (
    _NOW_MS
    + """
local meta, stream, pending = KEYS[1], KEYS[2], KEYS[3]
local topic, id, mode, stale, token = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local state = 'gone'
local mine = redis.call('HGET', pending, id)
if mine and string.find(mine, '|' .. token .. '|', 1, true) then
  if mode == 'ok' then
    redis.call('HSET', pending, id .. ':ok', '1')
    state = 'pending'
  else
    redis.call('HDEL', pending, id, id .. ':ok')
    redis.call('XDEL', stream, '0-' .. id)
    state = 'withdrawn'
  end
end
local c = tonumber(redis.call('HGET', meta, 'c'))
local s = tonumber(redis.call('HGET', meta, 's'))
local p = tonumber(redis.call('HGET', meta, 'p'))
if not (c and s and p) then return {state, '0', '0'} end
local limit = tonumber(id)
for _ = 1, 1000 do
  if c >= s then break end
  local next_id = string.format('%.0f', c + 1)
  local value = redis.call('HGET', pending, next_id)
  if value then
    local bar = string.find(value, '|', 1, true)
    local ready = redis.call('HEXISTS', pending, next_id .. ':ok') == 1
    if not ready and mode == 'ok' and c + 1 < limit then
      ready = ms - tonumber(string.sub(value, 1, bar - 1)) >= stale
    end
    if not ready then break end
    local payload = string.sub(value, string.find(value, '|', bar + 1, true) + 1)
    redis.call('PUBLISH', topic, next_id .. ':' .. payload)
    redis.call('HDEL', pending, next_id, next_id .. ':ok')
    p = c + 1
  end
  c = c + 1
end
redis.call('HSET', meta, 'c', string.format('%.0f', c), 'p', string.format('%.0f', p))
return {state, string.format('%.0f', c), string.format('%.0f', p)}
"""
)
"""Resolve ``id`` (``ok``: confirmed; ``withdraw``: refused), then publish the confirmed head of
the queue in id order. ``token`` makes sure the entry is the caller's own: after a failover the
new primary may have given that id to another message, which is not the caller's to resolve.
Only a confirmed caller publishes an orphan, and only one stored before its own message: its
WAIT covered the orphan too (replication is in order), so the orphan is as safe as anything
acknowledged."""


class DurablePublisher:
    def __init__(self, client: Redis, min_replicas: int, history_size: int, ttl: int) -> None:
        self.client = client
        self.min_replicas = min_replicas
        self.history_size = history_size
        self.ttl = ttl
        self._store = client.register_script(STORE_SCRIPT)
        self._advance = client.register_script(ADVANCE_SCRIPT)
        self._followers: set[asyncio.Task[None]] = set()

    async def aclose(self) -> None:
        for task in list(self._followers):
            task.cancel()
        for task in list(self._followers):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def publish(self, keys: list[str], topic: str, payload: str) -> int:
        """The message's id once ``min_replicas`` replicas hold it; BrokerUnavailable if not."""
        token = secrets.token_hex(8)
        try:
            seq, confirmed = await self._store_and_wait(keys, payload, token)
        except UNAVAILABLE as error:
            raise BrokerUnavailable(f"redis: {error}") from error
        if confirmed < self.min_replicas:
            with contextlib.suppress(*UNAVAILABLE):
                await self.advance(keys, topic, seq, "withdraw", token)
            raise BrokerUnavailable(
                f"{confirmed} of {self.min_replicas} replicas confirmed within {WAIT_TIMEOUT}s"
            )
        # Acknowledged from here on, whatever happens to the commit: N replicas hold it.
        committed = 0
        with contextlib.suppress(*UNAVAILABLE):
            _, committed, _ = await self.advance(keys, topic, seq, "ok", token)
        if committed < seq:
            task = asyncio.create_task(self._follow_up(keys, topic, seq, token))
            self._followers.add(task)
            task.add_done_callback(self._followers.discard)
        return seq

    async def _store_and_wait(self, keys: list[str], payload: str, token: str) -> tuple[int, int]:
        """Store and WAIT pipelined on one connection (WAIT covers that connection's writes)."""
        args: list[str | int] = [payload, self.history_size, self.ttl, token]
        for _ in range(2):
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.evalsha(self._store.sha, 3, *keys, *args)
                    pipe.wait(self.min_replicas, int(WAIT_TIMEOUT * 1000))
                    raw_id, confirmed = await pipe.execute()
                return int(raw_id), int(confirmed)
            except NoScriptError:  # a new primary, or a flushed script cache: nothing ran
                await self.client.script_load(STORE_SCRIPT)
        raise BrokerUnavailable("redis: the store script could not be loaded")

    async def advance(
        self, keys: list[str], topic: str, seq: int, mode: str, token: str
    ) -> tuple[str, int, int]:
        args: list[str | int] = [topic, seq, mode, int(STALE * 1000), token]
        raw: Any = await self._advance(keys=keys, args=args)
        state, committed, published = raw
        return _text(state), int(committed), int(published)

    async def _follow_up(self, keys: list[str], topic: str, seq: int, token: str) -> None:
        """Push the room's queue until ``seq`` is published: an orphan ahead of it becomes
        publishable after :data:`STALE`, and after a failover the commit must be redone."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FOLLOW_UP
        delay = 0.05
        for _ in range(1000):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
            with contextlib.suppress(*UNAVAILABLE):
                _, committed, _ = await self.advance(keys, topic, seq, "ok", token)
                if committed >= seq:
                    return
            if loop.time() >= deadline:
                break
        log.warning("message %d on %s not yet fanned out; the next publish will", seq, topic)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
