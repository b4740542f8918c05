"""Identities with ``GATEWAY_AUTH_SECRET`` set: the token's ``sub`` is the identity, in the same
display form as a URL id, and a path id must name exactly that (never only a look-alike)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from gateway.auth import mint
from tests.hostile.identity import connect_as, leave
from tests.support.clients import recv_until
from tests.support.servers import GatewayProcess, start_gateway

SECRET = "identity-secret-" + "s" * 32


@pytest.fixture(scope="module")
def server() -> Iterator[GatewayProcess]:
    with start_gateway({"GATEWAY_AUTH_SECRET": SECRET, "GATEWAY_RATE_LIMIT": "0"}) as gateway:
        yield gateway


async def test_the_path_id_must_name_the_subject_exactly(server: GatewayProcess) -> None:
    token = mint(SECRET, "alice")
    for path, admitted in [(" alice", True), ("alice\u00a0", True), ("Alice", False)]:
        outcome = await connect_as(server, path, query=f"?token={token}")
        assert outcome.admitted is admitted, (path, outcome.code)
        if not admitted:
            assert outcome.code == 403
        await leave(outcome)


async def test_a_subject_keeps_several_connections(server: GatewayProcess) -> None:
    token = mint(SECRET, "bob")
    first = await connect_as(server, "bob", query=f"?token={token}")
    second = await connect_as(server, "bob", query=f"?token={token}")
    assert (first.admitted, second.admitted) == (True, True)
    await leave(first)
    await leave(second)


async def test_the_subject_is_shown_in_display_form(server: GatewayProcess) -> None:
    outcome = await connect_as(server, None, query=f"?format=json&token={mint(SECRET, ' carol ')}")
    assert outcome.ws is not None
    await outcome.ws.send(json.dumps({"type": "message", "text": "who am I"}))
    event, _ = await recv_until(outcome.ws, lambda e: e.get("type") == "message")
    assert event["from"] == "carol"
    await leave(outcome)
