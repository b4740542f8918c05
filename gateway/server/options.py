"""How the gateway runs under uvicorn, shared by ``gateway serve`` and the gunicorn worker."""

from __future__ import annotations

from typing import Any

from gateway.server.handshake import GatewayHttpProtocol
from gateway.server.wsprotocol import GatewayWebSocketProtocol
from gateway.settings import Settings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn ``Config`` keywords that carry the gateway's settings down to the protocol layer."""
    return {
        "loop": "uvloop",
        "http": GatewayHttpProtocol.configured(
            settings.handshake_timeout, settings.max_connections
        ),
        "ws": GatewayWebSocketProtocol.configured(settings.socket_send_buffer, settings.send_queue),
        "ws_max_size": settings.max_frame_bytes,
        "ws_ping_interval": settings.heartbeat_interval,
        "ws_ping_timeout": settings.heartbeat_timeout,
        "ws_per_message_deflate": False,
        "lifespan": "on",
        "log_config": None,
    }
