"""Who may open a WebSocket, decided from the handshake alone, before the upgrade.

A policy without a server: a :class:`Handshake` (plain values the server layer read from the
request) in, :class:`Admitted` or :class:`Refusal` out; :mod:`gateway.server.transport`
answers a refusal with its HTTP status. Checks run cheapest first and all of them before
``accept``, so a refused client never sees a chat byte: the connection rate of the client's IP
(HTTP 429), its ``Origin`` (HTTP 403, against cross-site WebSocket hijacking), and with
``GATEWAY_AUTH_SECRET`` its token and the path's ``client_id`` (HTTP 403). Limits that depend on
other connections (per worker, per user) are the hub's, applied after the upgrade with close
code 1013 as the SPEC says.

Every refusal is counted in ``gateway_connections_refused_total{reason}`` and logged with its
reason, never with the token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from gateway.auth import (
    SUBPROTOCOL,
    Authenticator,
    Identity,
    TokenError,
    any_room,
    close_at_expiry,
    token_from,
)
from gateway.identity import RESERVED_PREFIX, display_form, is_reserved
from gateway.ratelimit import MovingWindowLimiter, connect_limiter
from gateway.settings import DEFAULT_PORTS, Settings, canonical_origin


@dataclass(frozen=True, slots=True)
class Handshake:
    """What the policy reads of an upgrade request."""

    ip: str
    origin: str | None
    host: str | None
    path_user: str | None
    """The URL's id in its display form (:func:`gateway.identity.display_form`); None on /ws."""
    query_token: str | None = None
    subprotocols: tuple[str, ...] = ()


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


class Admission:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.authenticator = (
            Authenticator(settings.auth_secret, settings.auth_leeway)
            if settings.auth_secret
            else None
        )
        self.origins = OriginPolicy(settings.allowed_origins, settings.allow_no_origin)
        self.connect_rate: MovingWindowLimiter = connect_limiter(settings.connect_rate_limit)

    async def admit(self, handshake: Handshake) -> Admitted | Refusal:
        """With a token its subject, in display form, is the identity; the path's id must equal
        it exactly, never only on skeletons: a look-alike path names someone else."""
        ip, path_user = handshake.ip, handshake.path_user
        if not await self.connect_rate.allow(ip):
            retry = await self.connect_rate.retry_after(ip)
            return Refusal(
                429, "rate_limited", "too many connections, slow down", {"Retry-After": str(retry)}
            )
        if not self.origins.allows(handshake.origin, handshake.host):
            return Refusal(403, "origin", "origin not allowed")
        if path_user is not None and is_reserved(path_user):
            return Refusal(
                403, "forbidden", f"client ids starting {RESERVED_PREFIX!r} are reserved"
            )
        token, offered = token_from(handshake.query_token, handshake.subprotocols)
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

    def expire(self, admitted: Admitted, close: Callable[[], None]) -> asyncio.TimerHandle | None:
        """Call ``close`` when an authenticated connection's token runs out (1008 is the
        caller's); None for connections without a token."""
        if admitted.identity is None:
            return None
        return close_at_expiry(admitted.identity, self.settings.auth_leeway, close)

    async def aclose(self) -> None:
        await self.connect_rate.aclose()
