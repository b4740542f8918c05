"""No secret ever reaches the log: run a server with both secrets at debug level, drive every
path that handles one (accepted and refused tokens in the query and the subprotocol, the
publish key right and wrong, a token in a page URL), then search the whole log."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx

from tests.security.helpers import (
    OTHER_SECRET,
    SECRET,
    chat_once,
    claims,
    refused,
    sign,
    token,
)
from tests.support.clients import of_type, open_ws, recv_until, wait_closed
from tests.support.servers import GATEWAY_BIN, start_gateway

API_KEY = "api-key-that-must-stay-private-5f0c2a"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_secrets_and_tokens_never_appear_in_the_log() -> None:
    env = {
        "GATEWAY_AUTH_SECRET": SECRET,
        "GATEWAY_API_KEY": API_KEY,
        "GATEWAY_LOG_LEVEL": "debug",
        "GATEWAY_AUTH_LEEWAY": "0",
    }
    tokens = {
        "query": token("lena"),
        "subprotocol": token("milo"),
        "wrong-secret": sign(claims("lena"), key=OTHER_SECRET),
        "expired": sign(claims("lena", ttl=-5)),
        "mismatch": token("mallory"),
        "bad-origin": token("lena"),
        "page": token("lena"),
    }
    with start_gateway(env) as server:
        lena = await open_ws(server.ws_url(f"/ws/lena?token={tokens['query']}"))
        await recv_until(lena, of_type("joined"))
        await chat_once(lena, "a message at debug level")
        milo = await open_ws(
            server.ws_url("/ws/milo"), subprotocols=["gateway.jwt", tokens["subprotocol"]]
        )
        await recv_until(milo, of_type("joined"))
        for name in ("wrong-secret", "expired"):
            status, _, _ = await refused(server.ws_url(f"/ws/lena?token={tokens[name]}"))
            assert status == 403
        status, _, _ = await refused(server.ws_url(f"/ws/lena?token={tokens['mismatch']}"))
        assert status == 403
        status, _, _ = await refused(
            server.ws_url(f"/ws/lena?token={tokens['bad-origin']}"), origin="http://evil.example"
        )
        assert status == 403
        tokens["short-lived"] = token("nora", ttl=2)
        nora = await open_ws(
            server.ws_url("/ws/nora"), subprotocols=["gateway.jwt", tokens["short-lived"]]
        )
        assert (await wait_closed(nora, timeout=8))[0] == 1008
        assert server.get(f"/?token={tokens['page']}").status_code == 200
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            url = "/api/rooms/lobby/messages"
            wrong = await http.post(url, json={"text": "x"}, headers=bearer(API_KEY[:-1]))
            assert wrong.status_code == 401
            right = await http.post(url, json={"text": "y"}, headers=bearer(API_KEY))
            assert right.status_code == 202
        for ws in (lena, milo):
            await ws.close()
    log = server.log()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert sum(record["event"] == "connection refused" for record in records) == 4
    assert "token=[redacted]" in log, "the URLs with tokens were never logged: vacuous test"
    leaks = {
        "GATEWAY_AUTH_SECRET": SECRET,
        "GATEWAY_API_KEY": API_KEY,
        "API key prefix": API_KEY[:-1],
    }
    for name, value in tokens.items():
        leaks[f"{name} token"] = value
        leaks[f"{name} token signature"] = value.rsplit(".", 1)[1]
    found = [name for name, value in leaks.items() if value in log]
    assert not found, f"secrets in {Path(server.log_path)}: {found}"


def test_token_command_prints_the_token_not_the_secret() -> None:
    minted = subprocess.run(
        [str(GATEWAY_BIN), "token", "--sub", "lena"],
        env={**os.environ, "GATEWAY_AUTH_SECRET": SECRET},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert minted.returncode == 0
    assert minted.stdout.count(".") == 2
    assert SECRET not in minted.stdout + minted.stderr
