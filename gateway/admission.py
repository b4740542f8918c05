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

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from gateway.auth import (
    SUBPROTOCOL,
    Authenticator,
    Identity,
    TokenError,
    any_room,
    grants_allow,
    token_from,
)
from gateway.hooks import CONNECT, Hooks
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
    path: str = ""
    """The request path without its query string (which may carry a token)."""


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
    rooms: tuple[str, ...] | None = None
    """Room grants from the app backend's ``connect`` answer; they replace the token's."""

    @property
    def may_join(self) -> Callable[[str], bool]:
        if self.rooms is not None:
            grants = self.rooms
            return lambda room: grants_allow(grants, room)
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
    def __init__(self, settings: Settings, hooks: Hooks | None = None) -> None:
        self.settings = settings
        self.hooks = hooks
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

    async def consult(
        self, admitted: Admitted, user: str, handshake: Handshake
    ) -> Admitted | Refusal:
        """Ask the app backend's ``connect`` hook about an admitted handshake (``user`` is its
        name, anonymous ones included): 403 on a refusal, 503 when the backend fails and the
        policy is ``closed``; an answer's ``rooms`` become the connection's grants."""
        if self.hooks is None or not self.hooks.asks(CONNECT):
            return admitted
        payload = {"user": user, "remote_addr": handshake.ip, "path": handshake.path}
        verdict = await self.hooks.ask(CONNECT, payload)
        if verdict.allow:
            return (
                admitted
                if verdict.rooms is None
                else dataclasses.replace(admitted, rooms=verdict.rooms)
            )
        if verdict.failed:
            return Refusal(503, "unavailable", "app backend unavailable, retry later")
        return Refusal(403, "forbidden", verdict.reason)

    async def aclose(self) -> None:
        await self.connect_rate.aclose()
