"""Commands with one command or pipeline in flight: what arrives meanwhile goes as one pipeline.

The broker publishes through it, and Redis presence sends its scripts through another (a
reconnect storm's claims, entries and counts: many handshakes' commands per write and per pooled
connection, where each took a connection, a ``send()`` and a read of its own).

Sent one by one, the publishes of a busy worker each take a pooled connection and a ``send()``,
and Redis may run them over several of its loop iterations: they reach the workers' pub/sub
sockets spread out, each worker fans them out over more ticks, and a socket gets fewer frames
per ``send()``. Here a publish goes at once when nothing is in flight (a quiet worker waits for
nothing), and the publishes issued while it is in flight go together when it completes: one
write, one read of the replies, one run of Redis' loop, and the subscribers get them in one
piece. Gathering per loop tick instead (send at the next pass) was measured to make
``--workers 2`` coalesce less: every publisher's commands are serial, and the two extra loop
passes spread each worker's publications out.

Each caller still gets its own reply: a command's error (a failing script, ``NOSCRIPT``) goes to
its caller only, and only a failure of the connection fails every command of that pipeline
(each caller then sees that error, as it would have alone). Commands run in issue order.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

Command = tuple[Any, ...]


class Pipeliner:
    def __init__(self, client: Redis, scripts: dict[str, str]) -> None:
        self._client = client
        self._scripts = scripts
        """sha1 -> source of the scripts run with EVALSHA, to load one Redis lacks."""
        self._busy = False
        self._waiting: list[tuple[Command, asyncio.Future[Any]]] = []
        self._batch: asyncio.Task[None] | None = None

    async def call(self, *command: Any) -> Any:
        """The command's reply; raises its error."""
        if self._busy:
            reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._waiting.append((command, reply))
            return await reply
        self._busy = True
        try:
            (value,) = await self._run([command])
        finally:
            self._next()
        if isinstance(value, Exception):
            raise value
        return value

    def _next(self) -> None:
        """Send what gathered meanwhile, or become idle."""
        self._batch = None
        if not self._waiting:
            self._busy = False
            return
        batch, self._waiting = self._waiting, []
        self._batch = asyncio.get_running_loop().create_task(self._answer(batch))
        self._batch.add_done_callback(lambda _: self._next())

    async def _answer(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        try:
            values = await self._run([command for command, _ in batch])
        except BaseException as error:
            failure = error if isinstance(error, Exception) else _closed()
            for _, reply in batch:
                if not reply.done():
                    reply.set_exception(failure)
            if not isinstance(error, Exception):
                raise
            return
        for (_, reply), value in zip(batch, values, strict=True):
            if reply.done():
                continue
            if isinstance(value, Exception):
                reply.set_exception(value)
            else:
                reply.set_result(value)

    async def _run(self, commands: list[Command]) -> list[Any]:
        """Each command's reply or error; a script Redis lacks is loaded and those rerun."""
        values = await self._execute(commands)
        missing = [i for i, value in enumerate(values) if isinstance(value, NoScriptError)]
        if missing:  # a new primary, or a flushed script cache: those commands did nothing
            for sha in {commands[i][1] for i in missing}:
                await self._client.script_load(self._scripts[sha])
            again = await self._execute([commands[i] for i in missing])
            for i, value in zip(missing, again, strict=True):
                values[i] = value
        return values

    async def _execute(self, commands: list[Command]) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            values: list[Any] = await pipe.execute(raise_on_error=False)
        return values

    async def aclose(self) -> None:
        waiting, self._waiting = self._waiting, []
        for _, reply in waiting:
            if not reply.done():
                reply.set_exception(_closed())
        batch = self._batch
        if batch is not None:
            batch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await batch


def _closed() -> RedisConnectionError:
    """What a command still waiting when the pipeliner closes gets: a Redis connection error,
    which every caller already handles as Redis being away (a publish, a presence read: broker
    unavailable; a presence write: left to the next refresh or to expiry)."""
    return RedisConnectionError("pipeline closed")
