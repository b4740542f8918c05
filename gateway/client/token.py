"""When a token needs replacing: its ``exp``, read without verifying.

The client never holds the signing secret and must not need it: the server verifies tokens,
the client only needs to know when the one it holds runs out, so it can ask the program's
callback for a new one in time (and reconnect with a fresh one rather than be refused).
"""

from __future__ import annotations

import base64
import binascii
import json

DEFAULT_LEAD = 60.0
"""Seconds before ``exp`` a refresh is due (at most half the remaining lifetime)."""
MIN_INTERVAL = 0.5
"""Shortest wait between refreshes, so a callback returning a short-lived token cannot spin."""


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (unix seconds) of a JWT, unverified; None when it has none or the
    token is not a readable JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    segment = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(segment))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


def refresh_delay(token: str, now: float, lead: float = DEFAULT_LEAD) -> float | None:
    """Seconds from ``now`` until ``token`` should be replaced: ``lead`` before its ``exp``,
    or half-way for a token that lives shorter than twice ``lead``; None for a token without
    ``exp`` (it never runs out)."""
    exp = jwt_expiry(token)
    if exp is None:
        return None
    remaining = exp - now
    return max(remaining - min(lead, remaining / 2), MIN_INTERVAL)
