"""Token refresh against ``gateway serve``: a same-``sub`` token moves the expiry; another
``sub`` or an invalid token leaves the old expiry in force; refreshes count as commands."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from gateway.auth import mint
from tests.support.clients import EventReader, open_ws
from tests.support.servers import GatewayProcess, poll_until, scaled, start_gateway

SECRET = "refresh-auth-secret-" + "r" * 16
SHORT = 2.0


@pytest.fixture(scope="module")
def server() -> Iterator[GatewayProcess]:
    settings = {
        "GATEWAY_AUTH_SECRET": SECRET,
        "GATEWAY_AUTH_LEEWAY": "0",
        "GATEWAY_COMMAND_RATE_LIMIT": "3/60",
    }
    with start_gateway(settings) as gateway:
        yield gateway


async def connect(server: GatewayProcess, user: str, ttl: float) -> tuple[EventReader, float]:
    expires = int(time.time() + ttl)
    token = mint(SECRET, user, ttl=ttl)
    reader = EventReader(await open_ws(server.ws_url(f"/ws/{user}?token={token}")), user)
    await reader.until(lambda: reader.has("joined", room="lobby"), 5, "the lobby's joined")
    return reader, expires


async def test_a_refresh_moves_the_expiry(server: GatewayProcess) -> None:
    alice, old_exp = await connect(server, "alice", SHORT + scaled(1))
    fresh = mint(SECRET, "alice", ttl=600)
    await alice.send({"type": "refresh", "token": fresh})
    await alice.until(lambda: alice.has("refreshed"), 5, "refreshed")
    refreshed = next(e for e in alice.events if e["type"] == "refreshed")
    assert abs(refreshed["exp"] - (time.time() + 600)) < 5
    await poll_until(lambda: time.time() > old_exp + 1, SHORT + 10, "the old expiry to pass")
    assert not alice.closed
    await alice.send({"type": "ping"})
    await alice.until(lambda: alice.has("pong"), 5, "a pong after the old expiry")
    await alice.close()


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (lambda: mint(SECRET, "mallory", ttl=600), "forbidden"),
        (lambda: mint("another-secret-of-enough-length-000", "bob", ttl=600), "invalid"),
        (lambda: mint(SECRET, "bob", ttl=-60), "invalid"),
        (lambda: "not.a.jwt", "invalid"),
    ],
    ids=["other-sub", "other-secret", "expired", "garbage"],
)
async def test_a_refused_refresh_leaves_the_old_expiry(
    server: GatewayProcess, token: object, code: str
) -> None:
    bob, old_exp = await connect(server, "bob", SHORT)
    await bob.send({"type": "refresh", "token": token()})  # type: ignore[operator]
    await bob.until(lambda: bob.has("error", code=code), 5, f"error {code}")
    assert not bob.has("refreshed")
    await bob.until(lambda: bob.closed, SHORT + 5, "the close at the old expiry")
    assert bob.close_code == 1008
    assert time.time() >= old_exp - 1


async def test_refreshes_count_against_the_command_rate_limit(server: GatewayProcess) -> None:
    carol, _ = await connect(server, "carol", 600)
    for _ in range(4):
        await carol.send({"type": "refresh", "token": mint(SECRET, "carol", ttl=600)})
    await carol.until(lambda: carol.has("error", code="rate_limited"), 5, "rate_limited")
    assert sum(e["type"] == "refreshed" for e in carol.events) == 3
    await carol.close()
