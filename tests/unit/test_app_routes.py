"""HTTP routes in process: answers that need a broken backend to observe."""

from __future__ import annotations

import httpx
import pytest

from gateway.broker import BrokerUnavailable
from gateway.server.app import create_app
from gateway.settings import load_settings


async def test_presence_api_answers_503_while_the_broker_is_unreachable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = create_app(load_settings(idle_timeout=0))

    async def unreachable(room: str, limit: int) -> tuple[int, list[str]]:
        raise BrokerUnavailable("redis down")

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        assert (await client.get("/api/rooms/lobby/presence")).status_code == 200
        monkeypatch.setattr(app.state.node.presence, "snapshot", unreachable)
        assert (await client.get("/api/rooms/lobby/presence")).status_code == 503
