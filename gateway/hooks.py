"""The app backend's say: a signed JSON ``POST`` per decision (connect, join, message).

One :class:`Hooks` per worker, built by :mod:`gateway.node`, holds one pooled
``httpx.AsyncClient``: keep-alive connections to the backend, at most :data:`POOL_SIZE` requests
in flight (more wait for a free connection, within the same deadline). Each call runs in the
task of the connection that asked, so a slow backend delays only that connection's decision;
every other connection, and the asking connection's deliveries and heartbeats, go on.

A request's body is signed ``X-Gateway-Signature: sha256=<hex HMAC-SHA256 of the raw body>`` and
carries the W3C ``traceparent`` of a ``CLIENT`` span of its own (``hook connect``, ``hook join``,
``hook message``), so the backend's spans join the gateway's trace.

An answer is trusted only when it is a 200 with a JSON object of at most
:data:`MAX_ANSWER_BYTES` whose known fields have the right types (``allow`` a boolean,
``reason`` a short string, ``rooms`` room grants, ``text`` a valid message); anything else, a
timeout or a transport error is a failure, and ``GATEWAY_HOOK_FAILURE`` decides: ``closed``
refuses (the caller answers ``unavailable``), ``open`` allows as if the backend had said yes.
The whole call, failure included, ends within ``GATEWAY_HOOK_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import httpx
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import inject
from opentelemetry.trace import Link, SpanKind

from gateway import metrics, tracing
from gateway.auth import parse_room_grants
from gateway.protocol import Codec, ErrorCode, ProtocolError
from gateway.settings import Settings

log = logging.getLogger("gateway.hooks")

CONNECT: Final = "connect"
JOIN: Final = "join"
MESSAGE: Final = "message"
SIGNATURE_HEADER: Final = "X-Gateway-Signature"
MAX_ANSWER_BYTES: Final = 16 * 1024
"""An answer larger than this is garbage (the longest honest one is a replaced text plus
room grants); the rest of it is never read."""
MAX_REASON_CHARS: Final = 200
POOL_SIZE: Final = 100
"""Requests in flight to the backend per worker; keep-alive connections kept as many."""
KEEPALIVE_SECONDS: Final = 30.0


class BadAnswer(ValueError):
    """The backend answered something that is not a verdict; the message says what."""


@dataclass(frozen=True, slots=True)
class Verdict:
    allow: bool
    reason: str = ""
    """The backend's reason for a refusal, or what went wrong with it (``failed``)."""
    rooms: tuple[str, ...] | None = None
    """``connect`` only: the rooms the connection may join besides the lobby."""
    text: str | None = None
    """``message`` only: the text to publish instead of the client's."""
    failed: bool = False
    """The backend did not give a valid answer; ``allow`` is the failure policy's."""


ALLOWED: Final = Verdict(True)


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Gateway-Signature`` value of ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class Hooks:
    """Asks the app backend; :meth:`asks` says whether an event is configured at all."""

    def __init__(self, settings: Settings, codec: Codec, transport: Any = None) -> None:
        self.url = settings.hook_url
        self.events = frozenset(settings.hook_events) if settings.hook_url else frozenset()
        self.timeout = settings.hook_timeout
        self.fail_open = settings.hook_failure == "open"
        self._secret = settings.hook_secret.encode()
        self._codec = codec
        self._transport = transport
        """An ``httpx`` transport for tests (``httpx.MockTransport``); None = the network."""
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"<Hooks {self.url or 'off'} events={sorted(self.events)}>"

    def asks(self, event: str) -> bool:
        return event in self.events

    def _http(self) -> httpx.AsyncClient:
        """Built on first use, in the worker's event loop (never before a fork)."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.url,
                transport=self._transport,
                limits=httpx.Limits(
                    max_connections=POOL_SIZE,
                    max_keepalive_connections=POOL_SIZE,
                    keepalive_expiry=KEEPALIVE_SECONDS,
                ),
                timeout=httpx.Timeout(self.timeout),
                follow_redirects=False,
                trust_env=False,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def ask(self, event: str, payload: dict[str, Any]) -> Verdict:
        """The backend's verdict on ``event``, or the failure policy's within the timeout."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                verdict = await self._request(event, payload)
        except (TimeoutError, httpx.HTTPError, BadAnswer, OSError) as error:
            verdict = self._failure(event, error)
        outcome = "error" if verdict.failed else "allow" if verdict.allow else "deny"
        metrics.HOOK_REQUESTS.labels(event, outcome).inc()
        metrics.HOOK_DURATION.labels(event).observe(time.perf_counter() - started)
        return verdict

    async def decide(self, event: str, payload: dict[str, Any]) -> Verdict | ProtocolError:
        """:meth:`ask`, with a refusal as the ``error`` a client gets: ``forbidden`` with the
        backend's reason, or ``unavailable`` when the backend failed (policy ``closed``)."""
        verdict = await self.ask(event, payload)
        if verdict.allow:
            return verdict
        if verdict.failed:
            return ProtocolError(ErrorCode.UNAVAILABLE, "app backend unavailable, retry later")
        return ProtocolError(ErrorCode.FORBIDDEN, verdict.reason)

    def _failure(self, event: str, error: BaseException) -> Verdict:
        what = str(error) or type(error).__name__
        if isinstance(error, TimeoutError):
            what = f"no answer within {self.timeout:g} s"
        log.warning("hook failed", extra={"event": event, "error": what, "open": self.fail_open})
        return Verdict(self.fail_open, f"app backend failed: {what}", failed=True)

    async def _request(self, event: str, payload: dict[str, Any]) -> Verdict:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self._secret, body)}
        with _hook_span(event, f"{self.url}/{event}"):
            inject(headers)
            async with self._http().stream(
                "POST", f"/{event}", content=body, headers=headers
            ) as response:
                if response.status_code != 200:
                    raise BadAnswer(f"HTTP {response.status_code}")
                raw = await _read_capped(response)
        return self._verdict(event, raw)

    def _verdict(self, event: str, raw: bytes) -> Verdict:
        try:
            answer = json.loads(raw)
        except (ValueError, RecursionError):
            raise BadAnswer("answer is not JSON") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("allow"), bool):
            raise BadAnswer('answer must be an object with a boolean "allow"')
        reason = answer.get("reason", "")
        if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
            raise BadAnswer(f'"reason" must be a string of at most {MAX_REASON_CHARS} characters')
        if not answer["allow"]:
            return Verdict(False, reason or "refused by the app backend")
        rooms = answer.get("rooms")
        if rooms is not None:
            rooms = parse_room_grants(rooms) if event == CONNECT else None
            if rooms is None:
                raise BadAnswer('"rooms" must be room names or prefix* patterns, on connect')
        text = answer.get("text")
        if text is not None:
            checked = self._codec.check_text(text) if event == MESSAGE else None
            if not isinstance(checked, str):
                detail = checked.detail if isinstance(checked, ProtocolError) else "on message"
                raise BadAnswer(f'"text" is not a valid message: {detail}')
            text = checked
        return Verdict(True, reason, rooms, text)


async def _read_capped(response: httpx.Response) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
        raise BadAnswer(f"answer over {MAX_ANSWER_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise BadAnswer(f"answer over {MAX_ANSWER_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@contextlib.contextmanager
def _hook_span(event: str, url: str) -> Iterator[None]:
    """A ``CLIENT`` span ``hook <event>``: a child of the handshake's span on connect, linked
    to the connection's span on join and message (as a message's publish span is)."""
    active = tracing.tracer()
    if active is None:
        yield
        return
    links = []
    connection = otel_context.get_value(tracing.CONNECTION_KEY)
    if isinstance(connection, trace.SpanContext) and connection.is_valid:
        links.append(Link(connection))
    attributes = {"http.request.method": "POST", "url.full": url, "gateway.hook.event": event}
    with active.start_as_current_span(
        f"hook {event}", kind=SpanKind.CLIENT, links=links, attributes=attributes
    ):
        yield
