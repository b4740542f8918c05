"""HTTP routes in process: answers that need a broken backend to observe."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.broker import BrokerUnavailable
from gateway.settings import load_settings


def test_presence_api_answers_503_while_the_broker_is_unreachable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = create_app(load_settings(idle_timeout=0))

    async def unreachable(room: str) -> list[str]:
        raise BrokerUnavailable("redis down")

    with TestClient(app) as client:
        assert client.get("/api/rooms/lobby/presence").status_code == 200
        monkeypatch.setattr(app.state.hub.presence, "online", unreachable)
        assert client.get("/api/rooms/lobby/presence").status_code == 503
