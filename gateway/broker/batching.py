"""Publishes issued in one event-loop tick go to Redis as one pipeline; pub/sub read in bulk.

Sent one by one, ten publishes of one tick are ten pooled connections, ten ``send()``s and ten
replies to wait for, and Redis may run them over several of its own loop iterations: they then
reach the workers' pub/sub sockets spread out, each worker fans them out over several ticks and
a socket gets fewer frames per ``send()`` (loadtest/RESULTS.md). One pipeline keeps them
together: one write, one read of the replies, one run of Redis' loop, and every subscriber
receives the tick's publications in one piece.

Each caller still gets its own reply: a command's error (a failing script, ``NOSCRIPT``) goes to
its caller only, and only a failure of the connection itself fails the whole pipeline (each
caller then sees that error, as it would have alone). Issue order is pipeline order.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import NoScriptError

from gateway.broker.base import BrokerUnavailable

try:
    from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
except ImportError:  # pragma: no cover - redis-py without hiredis support
    _AsyncHiredisParser = None  # type: ignore[assignment,misc]
    NOT_ENOUGH_DATA = object()

Command = tuple[Any, ...]


class PublishPipeline:
    """Gathers the commands submitted in one loop tick and sends them as one pipeline."""

    def __init__(self, client: Redis, scripts: dict[str, str]) -> None:
        self._client = client
        self._scripts = scripts
        """sha1 -> source of the scripts run with EVALSHA, to load one Redis lacks."""
        self._pending: list[tuple[Command, asyncio.Future[Any]]] = []
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()

    def submit(self, *command: Any) -> asyncio.Future[Any]:
        """The command's reply (or its error) once the tick's pipeline has run."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self._pending.append((command, reply))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._send)
        return reply

    def _send(self) -> None:
        batch, self._pending = self._pending, []
        self._scheduled = False
        if batch:
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def aclose(self) -> None:
        self._send()
        for task in list(self._running):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        try:
            replies = await self._execute([command for command, _ in batch])
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:  # a new primary, or a flushed script cache: those commands did nothing
                for sha in {batch[i][0][1] for i in missing}:
                    await self._client.script_load(self._scripts[sha])
                again = await self._execute([batch[i][0] for i in missing])
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
        except BaseException as error:
            failure = error
            if isinstance(error, asyncio.CancelledError):
                failure = BrokerUnavailable("broker closed")
            for _, reply in batch:
                if not reply.done():
                    reply.set_exception(failure)
            if not isinstance(error, Exception):
                raise
            return
        for (_, reply), value in zip(batch, replies, strict=True):
            if reply.done():
                continue
            if isinstance(value, Exception):
                reply.set_exception(value)
            else:
                reply.set_result(value)

    async def _execute(self, commands: list[Command]) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


def buffered_replies(pubsub: PubSub, limit: int) -> list[Any]:
    """Up to ``limit`` replies the pub/sub connection has already read from its socket, parsed
    without a read call each (redis-py's ``get_message`` costs ~15x the parse per message);
    empty when nothing is buffered or the parser is not hiredis (the caller reads as usual)."""
    connection = pubsub.connection
    parser = getattr(connection, "_parser", None)
    if _AsyncHiredisParser is None or not isinstance(parser, _AsyncHiredisParser):
        return []
    reader = parser._reader
    if reader is None or not parser._connected:
        return []
    replies: list[Any] = []
    while len(replies) < limit:
        reply = reader.gets()
        if reply is NOT_ENOUGH_DATA or reply is False:
            break
        replies.append(reply)
    return replies
