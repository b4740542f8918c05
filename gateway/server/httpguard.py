"""The HTTP edge: security headers on every answer, and request bodies refused before reading.

FastAPI parses a body before a route's dependencies run, so a caller without the API key could
make a worker hold a 100 MB body only to be told 401. :class:`HttpGuard` sits in front of every
HTTP scope and, for a request that carries a body, answers 404 (API off) or 401 (bad key) on an
API-key route, and 413 above :data:`MAX_BODY_BYTES`, without reading it. A body without
``Content-Length`` (chunked) is read up to the cap and handed on from memory, so the cap holds
while streaming. A refusal says ``Connection: close``: the server stops reading instead of
draining the rest of the sender's upload.

Every answer, the guard's own, FastAPI's errors and 404s, ``/metrics`` and static files, gets
:data:`SECURITY_HEADERS`: the page loads nothing from anywhere but its own origin, cannot be
framed, and a ``?token=`` in its URL does not travel in a ``Referer``.
"""

from __future__ import annotations

import hmac
import json
import re
from enum import Enum
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import metrics

MAX_BODY_BYTES: Final = 64 * 1024


class Unread(Enum):
    """Why :meth:`HttpGuard._read_capped` has no body to hand on."""

    TOO_LARGE = "too large"
    GONE = "client gone"


def content_security_policy(*style_hashes: str) -> str:
    """``data:`` images only: the page's empty favicon and Swagger UI's icons. ``'self'`` in
    ``connect-src`` covers the page's WebSocket to its own host (CSP Level 3). ``style_hashes``
    admit exactly those inline ``<style>`` texts (ReDoc's, see :data:`REDOC_STYLE_HASHES`)."""
    styles = " ".join(("style-src 'self'", *(f"'sha256-{digest}'" for digest in style_hashes)))
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            styles,
            "connect-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


REDOC_STYLE_HASHES: Final = (
    "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
    "QMIg+bpjm3JdElJ388KYke01izlUW0UoNOeKjpMxdgc=",
)
"""ReDoc's bundle (styled-components) writes ``<style>`` elements: empty ones it then fills
through the CSSOM (which the policy does not govern), and one fixed stylesheet. Their SHA-256
lets exactly those in; a ReDoc upgrade that changes them shows in tests/browser/test_csp.py."""


SECURITY_HEADERS: Final = (
    (b"content-security-policy", content_security_policy().encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
SECURITY_HEADER_MAP: Final = {name.decode(): value.decode() for name, value in SECURITY_HEADERS}
"""The same, for a Starlette response (a WebSocket handshake's refusal)."""

_PRESENCE = re.compile(r"^/api/rooms/[^/]+/presence$")


def needs_api_key(method: str, path: str) -> bool:
    """Every ``/api/`` route is the API key's, but reading presence (which also takes a JWT)."""
    if not path.startswith("/api/"):
        return False
    return not (method in {"GET", "HEAD"} and _PRESENCE.match(path))


def api_key_refusal(api_key: str, authorization: str) -> tuple[int, str] | None:
    """(status, detail) when ``authorization`` does not carry exactly ``Bearer <api_key>``."""
    if not api_key:
        return 404, "publish API is off: set GATEWAY_API_KEY"
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(key.encode(), api_key.encode()):
        return None
    return 401, "bad API key"


class HttpGuard:
    """Pure ASGI: wraps ``app`` for HTTP scopes; every other scope passes through untouched."""

    def __init__(self, app: ASGIApp, api_key: str, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = with_security_headers(send)
        headers = _headers(scope)
        length = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if not chunked and length in (None, "0"):
            await self.app(scope, receive, send)
            return
        if needs_api_key(scope["method"], scope["path"]):
            refusal = api_key_refusal(self.api_key, headers.get("authorization", ""))
            if refusal is not None:
                reason = "api_off" if refusal[0] == 404 else "unauthorized"
                await refuse(send, *refusal, reason)
                return
        if (
            length is not None
            and not chunked
            and (not length.isdigit() or int(length) > self.max_body)
        ):
            await refuse(send, 413, f"request body over {self.max_body} bytes", "too_large")
            return
        body = await self._read_capped(receive)
        if body is Unread.TOO_LARGE:
            await refuse(send, 413, f"request body over {self.max_body} bytes", "too_large")
        elif isinstance(body, bytes):
            await self.app(scope, _replay(body, receive), send)

    async def _read_capped(self, receive: Receive) -> bytes | Unread:
        """The whole body; ``TOO_LARGE`` as soon as it passes the cap (the rest is never
        read); ``GONE`` if the client left mid-body (a truncated body must not be acted
        on as if it were whole)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return Unread.GONE
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return Unread.TOO_LARGE
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def with_security_headers(send: Send) -> Send:
    async def sender(message: Message) -> None:
        if message["type"] == "http.response.start":
            present = list(message.get("headers", ()))
            names = {name.lower() for name, _ in present}
            extra = [header for header in SECURITY_HEADERS if header[0] not in names]
            message = {**message, "headers": [*present, *extra]}
        await send(message)

    return sender


async def refuse(send: Send, status: int, detail: str, reason: str) -> None:
    metrics.HTTP_REFUSED.labels(reason).inc()
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _headers(scope: Scope) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
    }


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hands the app the body already read, then the real channel (for ``http.disconnect``)."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
