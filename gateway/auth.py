"""Authenticated identities: HS256 JSON Web Tokens whose ``sub`` is the chat identity.

Why these rules:

* The algorithm is pinned to HS256. The token's own ``alg`` header is never trusted, so
  ``none`` and RS/HS confusion (a public key misused as an HMAC secret) cannot get a token in.
* ``exp`` is required: a token that never expires is a password that cannot be rotated.
  ``exp``/``nbf`` tolerate a small configurable clock skew (``GATEWAY_AUTH_LEEWAY``), and the
  same instant closes a connection whose token runs out while it is open.
* Browsers cannot set headers on a WebSocket handshake, so besides ``?token=`` a token may
  travel as the subprotocol pair ``["gateway.jwt", "<token>"]``. The server selects
  ``gateway.jwt`` — never the token, which must not be echoed into responses and logs.
* The optional ``rooms`` claim lists the rooms the user may join besides the lobby (where every
  connection starts, per the SPEC); an entry ending in ``*`` is a prefix (``team-a.*``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import jwt

from gateway.identity import display_form
from gateway.protocol import (
    DEFAULT_ROOM,
    ROOM_PATTERN,
    ErrorCode,
    ProtocolError,
    is_valid_room,
    is_valid_user,
)

ALGORITHM: Final = "HS256"
SUBPROTOCOL: Final = "gateway.jwt"
"""Offered by clients before the token; the only subprotocol name the server ever selects."""
MAX_TOKEN_CHARS: Final = 4096
MAX_ROOM_GRANTS: Final = 1000


class TokenError(Exception):
    """The token cannot be accepted; ``str(error)`` is safe to show the client and to log."""


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    expires_at: float
    """The token's ``exp`` (epoch seconds)."""
    rooms: tuple[str, ...] | None = None
    """Grants from the ``rooms`` claim; ``None`` = every room."""

    def may_join(self, room: str) -> bool:
        return grants_allow(self.rooms, room)


def grants_allow(grants: tuple[str, ...] | None, room: str) -> bool:
    """Whether room grants (``None``: every room) let a connection into ``room``."""
    if grants is None or room == DEFAULT_ROOM:
        return True
    return any(
        room.startswith(grant[:-1]) if grant.endswith("*") else room == grant for grant in grants
    )


def any_room(room: str) -> bool:
    return True


class Authenticator:
    def __init__(self, secret: str, leeway: float) -> None:
        self._secret = secret
        self.leeway = leeway

    def __repr__(self) -> str:
        return f"<Authenticator {ALGORITHM} leeway={self.leeway}>"

    def verify(self, token: str) -> Identity:
        """The identity the token proves, or :class:`TokenError` saying (safely) why not."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise TokenError("invalid token")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                leeway=self.leeway,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("token not yet valid") from None
        except jwt.MissingRequiredClaimError as error:
            raise TokenError(f"token lacks the {error.claim!r} claim") from None
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise TokenError("invalid token") from None
        return _identity(claims)


def _identity(claims: dict[str, Any]) -> Identity:
    user = claims["sub"]
    if not is_valid_user(user):
        raise TokenError("token has an invalid sub claim")
    rooms = claims.get("rooms")
    if rooms is not None:
        rooms = parse_room_grants(rooms)
        if rooms is None:
            raise TokenError("token has an invalid rooms claim")
    return Identity(user, float(claims["exp"]), rooms)


def parse_room_grants(raw: object) -> tuple[str, ...] | None:
    """Room names or ``prefix*`` patterns; ``None`` when the claim is malformed."""
    if not isinstance(raw, list) or len(raw) > MAX_ROOM_GRANTS:
        return None
    grants = []
    for grant in raw:
        if not isinstance(grant, str):
            return None
        if grant.endswith("*"):
            prefix = grant[:-1]
            if prefix and not ROOM_PATTERN.fullmatch(prefix):
                return None
        elif not is_valid_room(grant):
            return None
        grants.append(grant)
    return tuple(grants)


def token_from(query_token: str | None, subprotocols: Sequence[str]) -> tuple[str | None, bool]:
    """The presented token (query first, then the subprotocol pair) and whether the client
    offered :data:`SUBPROTOCOL` (then the server must select it, or browsers fail the socket)."""
    offered = SUBPROTOCOL in subprotocols
    if query_token:
        return query_token, offered
    if offered:
        index = list(subprotocols).index(SUBPROTOCOL)
        if index + 1 < len(subprotocols):
            return subprotocols[index + 1], True
    return None, offered


def mint(
    secret: str,
    sub: str,
    *,
    ttl: float = 3600,
    rooms: Iterable[str] | None = None,
    now: float | None = None,
) -> str:
    """A token for development and tests (``gateway token``); production tokens come from the
    identity provider that shares ``GATEWAY_AUTH_SECRET``."""
    if not is_valid_user(sub):
        raise ValueError(f"{sub!r} is not a valid user name")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": sub, "iat": issued, "exp": issued + int(ttl)}
    if rooms is not None:
        grants = parse_room_grants(list(rooms))
        if grants is None:
            raise ValueError("rooms must be room names or prefix* patterns")
        claims["rooms"] = list(grants)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def close_at_expiry(
    identity: Identity, leeway: float, close: Callable[[], None]
) -> asyncio.TimerHandle:
    """Call ``close`` when the token stops being valid.

    A ``call_at`` handle, not a task: the event loop keeps every handle in one heap, so this
    *is* one timer for all connections, and cancelling it on disconnect is O(1).
    """
    loop = asyncio.get_running_loop()
    delay = max(identity.expires_at + leeway - time.time(), 0.0)
    return loop.call_at(loop.time() + delay, close)


class Expiry:
    """A connection's token expiry timer; arming it again (a refresh) replaces it."""

    __slots__ = ("handle", "leeway")

    def __init__(self, leeway: float) -> None:
        self.leeway = leeway
        self.handle: asyncio.TimerHandle | None = None

    def arm(self, identity: Identity, close: Callable[[], None]) -> None:
        self.cancel()
        self.handle = close_at_expiry(identity, self.leeway, close)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


def renewed(authenticator: Authenticator | None, user: str, token: str) -> Identity | ProtocolError:
    """The identity a ``refresh`` token proves for the connection of ``user``, or the error to
    answer: ``invalid`` for a token that does not verify, ``forbidden`` for another ``sub``."""
    if authenticator is None:
        return ProtocolError(ErrorCode.INVALID, "nothing to refresh: this gateway has no auth")
    try:
        identity = authenticator.verify(token)
    except TokenError as error:
        return ProtocolError(ErrorCode.INVALID, str(error))
    if display_form(identity.user) != user:
        return ProtocolError(ErrorCode.FORBIDDEN, "the token is for another user")
    return identity
