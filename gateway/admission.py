"""Who may open a WebSocket, decided from the handshake alone, before the upgrade.

Checks run cheapest first and all of them before ``accept``, so a refused client never sees a
chat byte: the connection rate of the client's IP (HTTP 429), its ``Origin`` (HTTP 403,
against cross-site WebSocket hijacking), and with ``GATEWAY_AUTH_SECRET`` its token and the
path's ``client_id`` (HTTP 403). Limits that depend on other connections (per worker, per
user) are the hub's, applied after the upgrade with close code 1013 as the SPEC says.

Every refusal is counted in ``gateway_connections_refused_total{reason}`` and logged with its
reason, never with the token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from limits import RateLimitItemPerSecond
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket

from gateway import disconnect, metrics
from gateway.auth import (
    SUBPROTOCOL,
    Authenticator,
    Identity,
    TokenError,
    any_room,
    close_at_expiry,
    install_log_redaction,
    token_from,
)
from gateway.httpguard import SECURITY_HEADER_MAP
from gateway.identity import RESERVED_PREFIX, display_form, is_reserved
from gateway.settings import DEFAULT_PORTS, RateLimit, Settings, canonical_origin

if TYPE_CHECKING:
    from gateway.session import Session

log = logging.getLogger("gateway.admission")


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    reason: str
    """Label of ``gateway_connections_refused_total``."""
    detail: str
    """Body of the HTTP answer; never contains a token or a secret."""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Admitted:
    user: str | None
    """The identity; ``None``: anonymous, the hub will name it."""
    subprotocol: str | None = None
    identity: Identity | None = None
    """Set when a token proved the identity."""

    @property
    def may_join(self) -> Callable[[str], bool]:
        return any_room if self.identity is None else self.identity.may_join

    @property
    def shares_identity(self) -> bool:
        """Whether several connections may carry this identity at once: proven ones (up to the
        per-user limit) and anonymous ones; an unproven URL id may be held only once."""
        return self.identity is not None or self.user is None


class OriginPolicy:
    def __init__(self, allowed: tuple[str, ...], allow_missing: bool) -> None:
        self.any = "*" in allowed
        self.allowed = frozenset(origin for origin in allowed if origin != "*")
        self.allow_missing = allow_missing

    def allows(self, origin: str | None, host: str | None) -> bool:
        if origin is None:
            return self.allow_missing
        if self.any:
            return True
        canonical = canonical_origin(origin)
        if canonical is None:
            return False
        if self.allowed:
            return canonical in self.allowed
        return host is not None and same_host(canonical, host)


def same_host(canonical: str, host: str) -> bool:
    """Whether a canonical origin names the host and port the client connected to (``Host``);
    a ``Host`` without a port means the origin scheme's default port (a TLS proxy in front)."""
    scheme, _, origin_netloc = canonical.partition("://")
    try:
        origin, requested = urlsplit("//" + origin_netloc), urlsplit("//" + host.strip())
        origin_port, requested_port = origin.port, requested.port
    except ValueError:
        return False
    default = DEFAULT_PORTS[scheme]
    return origin.hostname == requested.hostname and (origin_port or default) == (
        requested_port or default
    )


class ConnectRateLimiter:
    """Handshakes per IP on the moving window of the `limits` library, per worker.

    In-process on purpose: the handshake path stays free of network round trips, and the limit
    guards this worker's accept loop, which is what a connection flood exhausts.
    """

    def __init__(self, rate: RateLimit) -> None:
        self.enabled = rate.enabled
        self.window = max(rate.window_seconds, 1)
        self._item = RateLimitItemPerSecond(max(rate.messages, 1), self.window)
        self._limiter = MovingWindowRateLimiter(storage_from_string("async+memory://"))

    async def allow(self, ip: str) -> bool:
        return not self.enabled or await self._limiter.hit(self._item, "connect", ip)

    async def retry_after(self, ip: str) -> int:
        stats = await self._limiter.get_window_stats(self._item, "connect", ip)
        return max(1, min(self.window, round(stats.reset_time - time.time())))


class Admission:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.authenticator = (
            Authenticator(settings.auth_secret, settings.auth_leeway)
            if settings.auth_secret
            else None
        )
        self.origins = OriginPolicy(settings.allowed_origins, settings.allow_no_origin)
        self.connect_rate = ConnectRateLimiter(settings.connect_rate_limit)
        install_log_redaction()

    async def admit(self, websocket: WebSocket, path_user: str | None) -> Admitted | Refusal:
        """``path_user``: the URL's id in its display form (:func:`gateway.identity.display_form`).

        With a token its subject, in the same display form, is the identity; the path's id
        must equal it exactly, never only on skeletons: a look-alike path names someone else.
        """
        ip = websocket.client.host if websocket.client else "unknown"
        if not await self.connect_rate.allow(ip):
            retry = await self.connect_rate.retry_after(ip)
            return Refusal(
                429, "rate_limited", "too many connections, slow down", {"Retry-After": str(retry)}
            )
        headers = websocket.headers
        if not self.origins.allows(headers.get("origin"), headers.get("host")):
            return Refusal(403, "origin", "origin not allowed")
        if path_user is not None and is_reserved(path_user):
            return Refusal(
                403, "forbidden", f"client ids starting {RESERVED_PREFIX!r} are reserved"
            )
        token, offered = token_from(
            websocket.query_params.get("token"), websocket.scope.get("subprotocols", ())
        )
        subprotocol = SUBPROTOCOL if offered else None
        if self.authenticator is None:
            return Admitted(path_user, subprotocol)
        if token is None:
            return Refusal(403, "unauthorized", "token required")
        try:
            identity = self.authenticator.verify(token)
        except TokenError as error:
            return Refusal(403, "unauthorized", str(error))
        user = display_form(identity.user)
        if path_user is not None and path_user != user:
            return Refusal(403, "forbidden", "client id does not match the token's subject")
        return Admitted(user, subprotocol, identity)

    def expire(self, session: Session, admitted: Admitted) -> asyncio.TimerHandle | None:
        """Close an authenticated connection with 1008 when its token runs out."""
        if admitted.identity is None:
            return None
        return close_at_expiry(
            admitted.identity,
            self.settings.auth_leeway,
            lambda: session.close(disconnect.TOKEN_EXPIRED),
        )


async def deny(websocket: WebSocket, refusal: Refusal) -> None:
    """Answer the handshake with an HTTP status instead of the upgrade."""
    metrics.CONNECTIONS_REFUSED.labels(refusal.reason).inc()
    log.info(
        "connection refused",
        extra={
            "path": websocket.url.path,
            "status": refusal.status,
            "reason": refusal.reason,
            "detail": refusal.detail,
            "client": websocket.client.host if websocket.client else None,
        },
    )
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        headers = {**SECURITY_HEADER_MAP, **refusal.headers}
        response = PlainTextResponse(refusal.detail, refusal.status, headers=headers)
        await websocket.send_denial_response(response)
    else:
        await websocket.close(1008, refusal.detail)
