"""The client's I/O: one ``websockets`` connection at a time, kept alive across drops.

Everything that decides (resume points, rejoins, reconnect plans, refresh times) lives in the
sans-I/O modules next to this one; this module only moves frames and waits. Two tasks run per
client: the connection loop (connect, read, plan, wait, again) and, with a refresh callback,
the token refresher. The program talks to both through one bounded queue of events: when the
program stops reading, the queue fills, the client stops reading its socket, and the server's
own slow-consumer protection takes over (the client then reconnects and resumes) — memory never
grows without bound on either side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random as _random
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from gateway.client.backoff import (
    BASE_SECONDS,
    CAP_SECONDS,
    Plan,
    backoff_delay,
    http_refusal_code,
)
from gateway.client.backoff import plan_reconnect as _plan_reconnect
from gateway.client.events import Disconnected, Event, RefreshFailed, parse_event
from gateway.client.state import Command, SessionState
from gateway.client.token import DEFAULT_LEAD, MIN_INTERVAL, jwt_expiry, refresh_delay

SUBPROTOCOL = Subprotocol("gateway.jwt")
TokenCallback = Callable[[], Awaitable[str]]


class ClientError(Exception):
    """Base of what the client raises."""


class ClientClosed(ClientError):
    """The client is offline for good: closed by the program, or refused (1008, 4408…)."""


class NotConnected(ClientError):
    """No session came up within ``send_timeout``, or the socket closed during the send."""


class Client:
    """A chat client of the gateway that stays connected and misses nothing.

    ``url`` is the gateway's base URL (``ws://host:port``; ``http://`` works too); the client
    speaks the JSON protocol on ``/ws/{user}``. With ``token`` it authenticates in the query
    (``token_in="query"``) or in the ``Sec-WebSocket-Protocol`` pair ``gateway.jwt, <token>``
    (``"subprotocol"``: kept out of URLs and so out of access logs). ``refresh`` is called
    before the token's ``exp`` for a new one, which also serves every reconnect.

    It reconnects as the chat page does (full-jitter backoff, the drain's ``after_ms``,
    offline after 1008/4408 unless the code is in ``reconnect_on``), rejoins its rooms, resumes
    each from the newest id it holds and hands over each message once, in id order; where
    history could not reach back it says so with a :class:`~gateway.client.events.Recovered`.
    ``backfill=False`` skips a room's kept history on its first join.
    """

    def __init__(
        self,
        url: str,
        user: str,
        *,
        token: str | None = None,
        token_in: Literal["query", "subprotocol"] = "query",
        refresh: TokenCallback | None = None,
        rooms: Iterable[str] = (),
        backfill: bool = True,
        reconnect_on: Collection[int] = (),
        queue_size: int = 1000,
        open_timeout: float = 10.0,
        send_timeout: float = 10.0,
        refresh_lead: float = DEFAULT_LEAD,
        backoff_base: float = BASE_SECONDS,
        backoff_cap: float = CAP_SECONDS,
        random: Callable[[], float] = _random.random,
        connect_options: Mapping[str, Any] | None = None,
    ) -> None:
        scheme = urlsplit(url).scheme
        if scheme not in ("ws", "wss", "http", "https"):
            raise ValueError(f"url must be ws://, wss://, http:// or https://, not {url!r}")
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.url = url.rstrip("/")
        if scheme.startswith("http"):
            self.url = "ws" + self.url[len("http") :]
        self.user = user
        self.token = token
        self.token_in = token_in
        self._refresh = refresh
        self._state = SessionState(user, rooms, backfill)
        self._reconnect_on = frozenset(reconnect_on)
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=queue_size)
        self._open_timeout = open_timeout
        self._send_timeout = send_timeout
        self._refresh_lead = refresh_lead
        self._backoff = (backoff_base, backoff_cap, random)
        self._connect_options = dict(connect_options or {})
        self._ws: ClientConnection | None = None
        self._ready = asyncio.Event()
        """Set while a session is up, and for good once the client has finished."""
        self._finished = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self.offline: Disconnected | None = None
        """Why the client stays offline (None while it runs or after :meth:`close`)."""

    # The program's side

    @property
    def connected(self) -> bool:
        """A session is up (the server acknowledged the lobby on the current connection)."""
        return self._state.established and not self._finished.is_set()

    @property
    def connection(self) -> ClientConnection | None:
        """The current socket, None while offline: for its addresses (which server holds it),
        not for sending, which would bypass the client's bookkeeping."""
        return self._ws

    @property
    def rooms(self) -> tuple[str, ...]:
        """The rooms the client is in, or rejoins on its next connection."""
        return tuple(self._state.rooms)

    async def connect(self) -> None:
        """Start, and return once the first session is up (retrying as after a drop: bound it
        with ``asyncio.timeout`` and :meth:`close` on expiry). Raises :class:`ClientClosed`
        when the server refuses for good."""
        if not self._tasks:
            self._tasks.append(asyncio.create_task(self._run(), name=f"client {self.user}"))
            if self._refresh is not None:
                self._tasks.append(asyncio.create_task(self._refresher()))
        await self._ready.wait()
        if self._finished.is_set():
            raise ClientClosed(self.offline.reason if self.offline else "closed")

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.close()

    def __aiter__(self) -> Client:
        return self

    async def __anext__(self) -> Event:
        """The next event; the iteration ends once the client has finished and every event
        queued before that has been handed over."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        if self._finished.is_set():
            raise StopAsyncIteration
        getter = asyncio.ensure_future(self._queue.get())
        finisher = asyncio.ensure_future(self._finished.wait())
        try:
            await asyncio.wait({getter, finisher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            finisher.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        if not self._queue.empty():
            return self._queue.get_nowait()
        raise StopAsyncIteration

    async def send(self, room: str, text: str) -> None:
        """Post ``text`` to ``room``. Waits up to ``send_timeout`` for a session; at most
        once: a message sent as the connection drops may be lost (the server acks nothing)."""
        await self._command({"type": "message", "room": room, "text": text})

    async def direct(self, to: str, text: str) -> None:
        """A direct message to ``to`` (who must be online)."""
        await self._command({"type": "direct", "to": to, "text": text})

    async def ping(self) -> None:
        """Ask for a :class:`~gateway.client.events.Pong` (an application-level round trip)."""
        await self._command({"type": "ping"})

    async def join(self, room: str) -> None:
        """Be in ``room`` from now on, across reconnects (its ``joined`` ack comes as an event;
        the room's kept history too, unless ``backfill=False``)."""
        await self._send_now(self._state.join(room))

    async def leave(self, room: str) -> None:
        """Leave ``room``; it is not rejoined and its later events are dropped."""
        await self._send_now(self._state.leave(room))

    async def close(self) -> None:
        """Close the connection normally (1000) and stop; queued events can still be read."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._finish()

    # The connection loop

    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._closing:
                code, reason, established = await self._connection()
                if established:
                    attempt = 0
                if self._closing:
                    return
                plan = self._plan(code, reason, attempt)
                self._state.hint_ms = None
                if not plan.retry:
                    self.offline = Disconnected(code, plan.reason, None)
                    self._finish()
                    await self._emit(self.offline)
                    return
                await self._emit(Disconnected(code, reason, plan.delay))
                attempt += 1
                await asyncio.sleep(plan.delay)
        finally:
            self._finish()

    def _plan(self, code: int, reason: str, attempt: int) -> Plan:
        base, cap, random = self._backoff
        return _plan_reconnect(
            code,
            reason,
            hint_ms=self._state.hint_ms,
            attempt=attempt,
            by_user=self._closing,
            was_connected=self._state.was_connected,
            reconnect_on=self._reconnect_on,
            can_refresh=self._refresh is not None,
            random=random,
            base=base,
            cap=cap,
        )

    async def _connection(self) -> tuple[int, str, bool]:
        """One connection from its handshake to its close: (close code, reason, whether a
        session came up). A refused handshake counts as the close code it amounts to."""
        await self._fresh_token()
        try:
            ws = await self._open()
        except InvalidStatus as error:
            status = error.response.status_code
            body = error.response.body.decode(errors="replace")[:200] if error.response.body else ""
            return http_refusal_code(status), f"HTTP {status} {body}".strip(), False
        except (OSError, TimeoutError, InvalidHandshake) as error:
            return 1006, str(error) or type(error).__name__, False
        self._ws = ws
        self._state.opened()
        try:
            await self._read(ws)
        finally:
            established = self._state.established
            self._ws = None
            self._state.closed()
            if not self._finished.is_set():
                self._ready.clear()
            await ws.close()
        close = ws.protocol.close_rcvd
        if close is None:
            return 1006, "connection lost", established
        return close.code, close.reason, established

    async def _open(self) -> ClientConnection:
        path = f"{self.url}/ws/{quote(self.user, safe='')}"
        options: dict[str, Any] = {"open_timeout": self._open_timeout, **self._connect_options}
        if self.token and self.token_in == "subprotocol":
            options["subprotocols"] = [SUBPROTOCOL, Subprotocol(self.token)]
        elif self.token:
            path += f"?token={quote(self.token, safe='')}"
        return await connect(path, **options)

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                if isinstance(frame, str):
                    await self._on_frame(ws, frame)

    async def _on_frame(self, ws: ClientConnection, frame: str) -> None:
        """One frame holds one JSON object, or several newline-separated (a server batch)."""
        for line in frame.split("\n"):
            try:
                data = json.loads(line) if line.strip() else None
            except ValueError:
                continue  # not the JSON protocol: nothing a typed client can hand over
            if not isinstance(data, dict):
                continue
            step = self._state.on_event(parse_event(data))
            for command in step.send:  # before handing over: resumes must not wait on the program
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(json.dumps(command))
            if self._state.established:
                self._ready.set()
            for event in step.emit:
                await self._emit(event)

    # Helpers

    async def _emit(self, event: Event) -> None:
        await self._queue.put(event)

    def _finish(self) -> None:
        self._finished.set()
        self._ready.set()  # wakes every waiter; each checks _finished

    async def _command(self, command: Command) -> None:
        """Send on the current session, waiting (up to ``send_timeout``) for one to come up."""
        try:
            async with asyncio.timeout(self._send_timeout):
                ws = await self._session()
        except TimeoutError:
            raise NotConnected(f"no session within {self._send_timeout} s") from None
        try:
            await ws.send(json.dumps(command))
        except ConnectionClosed as error:
            raise NotConnected("the connection closed during the send") from error

    async def _session(self) -> ClientConnection:
        """The socket of an established session; the caller bounds the wait in time."""
        for _ in range(1000):  # each turn waits for a session to come up: bounded by the caller
            if self._finished.is_set() or self._closing:
                raise ClientClosed(self.offline.reason if self.offline else "closed")
            await self._ready.wait()
            ws = self._ws
            if ws is not None and self._state.established:
                return ws
            self._ready.clear()  # a session that just went away: wait for the next one
        raise NotConnected("the connection kept dropping")

    async def _send_now(self, commands: list[Command]) -> None:
        ws = self._ws
        for command in commands:
            if ws is None or not self._state.established:
                return  # the next connection's rejoin carries the change
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps(command))

    # Token refresh

    async def _refresher(self) -> None:
        """Replace the token before it runs out, for this connection and the next ones."""
        failures = 0
        base, cap, random = self._backoff
        while not self._closing:
            token = self.token
            wait = refresh_delay(token, time.time(), self._refresh_lead) if token else None
            if wait is None:
                return  # no expiry: nothing to refresh
            if failures:
                retry = backoff_delay(failures, base=base, cap=cap, random=random)
                wait = min(wait, max(retry, MIN_INTERVAL))
            await asyncio.sleep(wait)
            if await self._new_token():
                failures = 0
                await self._send_now([{"type": "refresh", "token": str(self.token)}])
            else:
                failures = min(failures + 1, 10)

    async def _fresh_token(self) -> None:
        """Before a handshake: a token that has run out is replaced first, if it can be."""
        exp = jwt_expiry(self.token) if self.token else None
        if self._refresh is not None and exp is not None and exp <= time.time() + 1:
            await self._new_token()

    async def _new_token(self) -> bool:
        assert self._refresh is not None
        try:
            token = await self._refresh()
        except Exception as error:  # the program's callback: reported, never fatal
            await self._emit(RefreshFailed(f"{type(error).__name__}: {error}"))
            return False
        if not isinstance(token, str) or not token:
            await self._emit(RefreshFailed(f"the callback returned {token!r}, not a token"))
            return False
        self.token = token
        return True
