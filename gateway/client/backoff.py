"""When to reconnect, and whether to: the chat page's ``planReconnect`` and ``backoffDelay``.

A fleet that restarts must not be stampeded by every client coming back at the same instant, so
waits are *full jitter* (uniform in ``[0, min(cap, base * 2**attempt))``) and a drain's
``reconnect`` hint (``after_ms``, which the server spreads over its clients) is honoured before
any jitter is added. A client the server refused on policy (1008: bad token, abuse, kicked) or
closed for idleness (4408) would only be refused again, so it stays offline unless the program
says otherwise (``reconnect_on``). One 1008 is not a verdict on the client: "client id already
connected" right after the client's own connection dropped means the server has not noticed the
drop yet, so the client backs off and tries again, as the page does.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Collection
from dataclasses import dataclass

BASE_SECONDS = 0.5
CAP_SECONDS = 30.0
NO_RETRY: dict[int, str] = {
    1008: "refused by the server's policy",
    4408: "disconnected after being idle",
}
"""Close codes after which the client stays offline, with what to report."""
STILL_CONNECTED = "already connected"
TOKEN_EXPIRED = "token expired"
LONGER_WINDOW = 3
"""Attempt the backoff starts from after 1013 (try again later) or a stale duplicate id."""


def backoff_delay(
    attempt: int,
    *,
    base: float = BASE_SECONDS,
    cap: float = CAP_SECONDS,
    random: Callable[[], float] = _random.random,
) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0 = first): uniform in
    ``[0, min(cap, base * 2**attempt))``."""
    ceiling = min(cap, base * 2.0 ** min(max(attempt, 0), 30))
    return float(random() * ceiling)


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do after a close: retry after ``delay`` seconds, or stay offline for ``reason``."""

    retry: bool
    delay: float = 0.0
    reason: str = ""


def plan_reconnect(
    code: int,
    reason: str = "",
    *,
    hint_ms: int | None = None,
    attempt: int = 0,
    by_user: bool = False,
    was_connected: bool = False,
    reconnect_on: Collection[int] = (),
    can_refresh: bool = False,
    random: Callable[[], float] = _random.random,
    base: float = BASE_SECONDS,
    cap: float = CAP_SECONDS,
) -> Plan:
    """The page's ``planReconnect``, plus two things a program may ask for: ``reconnect_on``
    (codes to retry even though the page would not) and ``can_refresh`` (a close for an expired
    token is retried when a refresh callback can get a new one)."""

    def delay(tries: int) -> float:
        return backoff_delay(tries, base=base, cap=cap, random=random)

    if by_user:
        return Plan(False, reason="closed by the client")
    if code == 1008 and was_connected and STILL_CONNECTED in reason.lower():
        return Plan(True, delay(max(attempt, LONGER_WINDOW)))
    if code == 1008 and can_refresh and TOKEN_EXPIRED in reason.lower():
        return Plan(True, delay(attempt))
    if code in NO_RETRY and code not in reconnect_on:
        why = NO_RETRY[code]
        return Plan(False, reason=f"{why}: {reason}" if reason else why)
    if hint_ms is not None and hint_ms >= 0:
        return Plan(True, hint_ms / 1000 + delay(0))
    tries = max(attempt, LONGER_WINDOW) if code == 1013 else attempt
    return Plan(True, delay(tries))


def http_refusal_code(status: int) -> int:
    """The close code a handshake refused with HTTP ``status`` counts as: 429 and 5xx are
    "try again later" (1013); any other refusal (403 token or hook, 404) is policy (1008)."""
    return 1013 if status == 429 or status >= 500 else 1008
