"""How the handshake deadline and the socket cap are configured (gateway/server/handshake.py); their
behaviour against real sockets is in tests/hostile/test_slowloris.py."""

from __future__ import annotations

import pytest

from gateway.server.handshake import GatewayHttpProtocol, headroom
from gateway.server.options import uvicorn_options
from gateway.server.wsprotocol import GatewayWebSocketProtocol
from gateway.settings import SettingsError, load_settings


def test_headroom_lets_a_few_websockets_beyond_the_limit_hear_their_1013() -> None:
    assert headroom(3) == 16
    assert headroom(50_000) == 3125


def test_the_cap_is_off_without_a_connection_limit() -> None:
    assert GatewayHttpProtocol.configured(10, 0).capacity == 0
    assert GatewayHttpProtocol.configured(10, 100).capacity == 116


def test_uvicorn_gets_the_gateway_protocols_with_the_settings() -> None:
    settings = load_settings(handshake_timeout=2.5, max_connections=100, send_queue=7)
    options = uvicorn_options(settings)
    http, ws = options["http"], options["ws"]
    assert issubclass(http, GatewayHttpProtocol)
    assert (http.handshake_timeout, http.capacity) == (2.5, 116)
    assert issubclass(ws, GatewayWebSocketProtocol)
    assert ws.send_queue == 7


def test_handshake_timeout_defaults_to_ten_seconds_and_must_be_positive() -> None:
    assert load_settings().handshake_timeout == 10.0
    with pytest.raises(SettingsError, match="GATEWAY_HANDSHAKE_TIMEOUT"):
        load_settings(handshake_timeout=0)
