"""JWT identities against a real server: every way in that must fail fails before the upgrade,
is counted, and disturbs nobody; what must work works."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from websockets.asyncio.client import ClientConnection

from tests.security.helpers import (
    CLOSED,
    OTHER_SECRET,
    REFUSED,
    REJECTED,
    SECRET,
    b64,
    bystander,
    chat_once,
    claims,
    closed_before_any_data,
    forge,
    refused,
    sign,
    token,
    wait_connections,
    wait_metric,
)
from tests.support.clients import of_type, open_ws, recv_text_until, recv_until, wait_closed
from tests.support.metrics import metric
from tests.support.servers import GATEWAY_BIN, GatewayProcess, start_gateway


@pytest.fixture(scope="module")
def server() -> Iterator[GatewayProcess]:
    env = {
        "GATEWAY_AUTH_SECRET": SECRET,
        "GATEWAY_AUTH_LEEWAY": "0",
        "GATEWAY_RATE_LIMIT": "0",
        "GATEWAY_MAX_CONNECTIONS_PER_USER": "2",
    }
    with start_gateway(env) as gateway:
        yield gateway


@pytest.fixture
async def witness(server: GatewayProcess) -> AsyncIterator[ClientConnection]:
    async with bystander(server, f"/ws/witness?token={token('witness')}") as ws:
        yield ws


def tampered() -> str:
    """A genuine token for mallory whose payload was rewritten to say alice."""
    header, _, signature = sign(claims("mallory")).split(".")
    return f"{header}.{b64(json.dumps(claims('alice')).encode())}.{signature}"


INVALID = "invalid token"
BAD_TOKENS = {
    "wrong-secret": (lambda: sign(claims(), key=OTHER_SECRET), INVALID),
    "tampered": (tampered, INVALID),
    "alg-none": (lambda: forge({"alg": "none", "typ": "JWT"}, claims()), INVALID),
    "alg-none-uppercase": (lambda: forge({"alg": "None", "typ": "JWT"}, claims()), INVALID),
    "alg-rs256-header-hmac-body": (
        lambda: forge({"alg": "RS256", "typ": "JWT"}, claims(), SECRET),
        INVALID,
    ),
    "alg-hs512-right-secret": (
        lambda: forge({"alg": "HS512"}, claims(), SECRET, "sha512"),
        INVALID,
    ),
    "expired": (lambda: sign(claims(ttl=-10)), "token expired"),
    "not-yet-valid": (
        lambda: sign(claims(nbf=int(time.time()) + 3600)),
        "token not yet valid",
    ),
    "no-exp": (lambda: sign({"sub": "alice"}), "token lacks the 'exp' claim"),
    "no-sub": (lambda: sign({"exp": int(time.time()) + 60}), "token lacks the 'sub' claim"),
    "sub-not-a-string": (lambda: sign(claims() | {"sub": 42}), INVALID),
    "sub-not-a-valid-id": (lambda: sign(claims(sub="al/ice")), "token has an invalid sub claim"),
    "rooms-not-a-list": (lambda: sign(claims(rooms="ops")), "token has an invalid rooms claim"),
    "garbage": (lambda: "not.a.token", INVALID),
    "oversized": (lambda: "a" * 5000, INVALID),
}


@pytest.mark.parametrize(("make", "detail"), BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
async def test_bad_token_is_refused_before_upgrade(
    server: GatewayProcess, witness: ClientConnection, make: Callable[[], str], detail: str
) -> None:
    before = metric(server.base_url, REFUSED, reason="unauthorized")
    status, body, _ = await refused(server.ws_url(f"/ws/alice?token={make()}"))
    assert (status, body) == (403, detail)
    assert metric(server.base_url, REFUSED, reason="unauthorized") == before + 1


@pytest.mark.parametrize(
    ("path", "detail"),
    [("/ws/alice", "token required"), ("/ws", "token required"), ("/ws/alice?token=", "token")],
    ids=["json-endpoint", "anonymous-endpoint", "empty-token"],
)
async def test_missing_token_is_refused(
    server: GatewayProcess, witness: ClientConnection, path: str, detail: str
) -> None:
    before = metric(server.base_url, REFUSED, reason="unauthorized")
    status, body, _ = await refused(server.ws_url(path))
    assert (status, detail in body) == (403, True)
    assert metric(server.base_url, REFUSED, reason="unauthorized") == before + 1


async def test_subprotocol_without_token_is_refused(
    server: GatewayProcess, witness: ClientConnection
) -> None:
    status, body, _ = await refused(server.ws_url("/ws/alice"), subprotocols=["gateway.jwt"])
    assert (status, body) == (403, "token required")


@pytest.mark.parametrize(
    ("path", "sub"),
    [("/ws/alice", "mallory"), ("/ws/anonymous-1", "anonymous-1")],
    ids=["mismatched-client-id", "reserved-anonymous-id"],
)
async def test_identity_other_than_the_token_is_forbidden(
    server: GatewayProcess, witness: ClientConnection, path: str, sub: str
) -> None:
    before = metric(server.base_url, REFUSED, reason="forbidden")
    status, _, _ = await refused(server.ws_url(f"{path}?token={token(sub)}"))
    assert status == 403
    assert metric(server.base_url, REFUSED, reason="forbidden") == before + 1


async def test_query_token_sets_the_identity(server: GatewayProcess) -> None:
    ws = await open_ws(server.ws_url(f"/ws/alice?token={token('alice')}"))
    joined, _ = await recv_until(ws, of_type("joined"))
    assert "alice" in joined["online"]
    await ws.send(json.dumps({"type": "message", "text": "hi, it's me"}))
    message, _ = await recv_until(ws, of_type("message", text="hi, it's me"))
    assert message["from"] == "alice"
    await ws.close()


async def test_subprotocol_token_echoes_only_the_protocol_name(server: GatewayProcess) -> None:
    secret_token = token("bob")
    ws = await open_ws(server.ws_url("/ws/bob"), subprotocols=["gateway.jwt", secret_token])
    assert ws.subprotocol == "gateway.jwt"
    assert ws.response is not None
    assert ws.response.headers["Sec-WebSocket-Protocol"] == "gateway.jwt"
    assert all(secret_token not in value for value in ws.response.headers.values())
    await recv_until(ws, of_type("joined"))
    await chat_once(ws)
    await ws.close()


async def test_anonymous_endpoint_takes_the_identity_from_the_token(
    server: GatewayProcess,
) -> None:
    ws = await open_ws(server.ws_url("/ws"), subprotocols=["gateway.jwt", token("carol")])
    line, _ = await recv_text_until(ws, lambda frame: "joined" in frame)
    assert line.startswith("carol joined.")
    await ws.send("hello from the seed format")
    await recv_text_until(ws, lambda frame: frame == "carol: hello from the seed format")
    await ws.close()


async def test_rooms_claim_limits_joins(server: GatewayProcess, witness: ClientConnection) -> None:
    before = metric(server.base_url, REJECTED, reason="forbidden")
    ws = await open_ws(server.ws_url(f"/ws/dora?token={token('dora', rooms=['ops', 'team-a.*'])}"))
    await recv_until(ws, of_type("joined", room="lobby"))
    for room in ("ops", "team-a.backend"):
        await ws.send(json.dumps({"type": "join", "room": room}))
        await recv_until(ws, of_type("joined", room=room))
    for command in (
        {"type": "join", "room": "secret"},
        {"type": "resume", "room": "team-b.backend", "after": "0"},
    ):
        await ws.send(json.dumps(command))
        error, _ = await recv_until(ws, of_type("error"))
        assert error["code"] == "forbidden", error
    await ws.send(json.dumps({"type": "message", "room": "secret", "text": "let me in"}))
    error, _ = await recv_until(ws, of_type("error"))
    assert error["code"] == "unknown_room"
    assert metric(server.base_url, REJECTED, reason="forbidden") == before + 2
    await ws.send(json.dumps({"type": "message", "room": "ops", "text": "allowed here"}))
    await recv_until(ws, of_type("message", room="ops", text="allowed here"))
    await ws.close()


async def test_per_user_connection_limit(server: GatewayProcess, witness: ClientConnection) -> None:
    """Several connections of one proven identity are legitimate, up to the per-user limit."""
    wait_connections(server, 1)
    before = metric(server.base_url, CLOSED, reason="policy")
    first = await open_ws(server.ws_url(f"/ws/erin?token={token('erin')}"))
    second = await open_ws(server.ws_url(f"/ws/erin?token={token('erin')}"))
    for ws in (first, second):
        await recv_until(ws, of_type("joined"))
    third = await open_ws(server.ws_url(f"/ws/erin?token={token('erin')}"))
    assert await closed_before_any_data(third) == (1013, "connection limit reached")
    wait_metric(server, CLOSED, before + 1, reason="policy")
    await chat_once(first, "the first two stay")
    await second.close()
    wait_connections(server, 2)
    again = await open_ws(server.ws_url(f"/ws/erin?token={token('erin')}"))
    await recv_until(again, of_type("joined"))
    await chat_once(again)
    await first.close()
    await again.close()


async def test_token_expiring_mid_connection_closes_with_1008(
    server: GatewayProcess, witness: ClientConnection
) -> None:
    before = metric(server.base_url, CLOSED, reason="policy")
    expires = int(time.time()) + 3
    ws = await open_ws(server.ws_url(f"/ws/frank?token={sign({'sub': 'frank', 'exp': expires})}"))
    await recv_until(ws, of_type("joined"))
    await chat_once(ws, "before expiry")
    code, reason = await wait_closed(ws, timeout=8)
    assert (code, reason) == (1008, "token expired")
    assert time.time() >= expires - 0.5
    wait_metric(server, CLOSED, before + 1, reason="policy")


def cli_token(*args: str, secret: str = SECRET) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GATEWAY_AUTH_SECRET": secret}
    return subprocess.run(
        [str(GATEWAY_BIN), "token", *args], env=env, capture_output=True, text=True, timeout=30
    )


async def test_cli_minted_token_gets_in_with_its_room_grants(
    server: GatewayProcess, witness: ClientConnection
) -> None:
    minted = cli_token("--sub", "ivan", "--rooms", "ops,team-a.*", "--ttl", "60")
    assert minted.returncode == 0, minted.stderr
    ws = await open_ws(server.ws_url(f"/ws/ivan?token={minted.stdout.strip()}"))
    await recv_until(ws, of_type("joined", room="lobby"))
    await ws.send(json.dumps({"type": "join", "room": "team-a.ui"}))
    await recv_until(ws, of_type("joined", room="team-a.ui"))
    await ws.send(json.dumps({"type": "join", "room": "payroll"}))
    error, _ = await recv_until(ws, of_type("error"))
    assert error["code"] == "forbidden"
    await ws.close()


@pytest.mark.parametrize(
    ("args", "secret", "complaint"),
    [
        (["--sub", "ivan"], "", "needs GATEWAY_AUTH_SECRET"),
        (["--sub", "ivan"], "too-short", "GATEWAY_AUTH_SECRET"),
        (["--sub", "a/b"], SECRET, "not a valid user name"),
        (["--sub", "ivan", "--rooms", "bad room"], SECRET, "rooms"),
        (["--sub", "ivan", "--ttl", "0"], SECRET, "--ttl"),
    ],
    ids=["no-secret", "short-secret", "bad-sub", "bad-room", "bad-ttl"],
)
def test_cli_refuses_to_mint_bad_tokens(args: list[str], secret: str, complaint: str) -> None:
    minted = cli_token(*args, secret=secret)
    assert (minted.returncode, minted.stdout) == (2, "")
    assert complaint in minted.stderr
