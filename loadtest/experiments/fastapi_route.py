"""Experiment: chat WebSockets served through FastAPI's router, to measure what skipping it wins.

Shipped, ``/ws`` and ``/ws/{client_id}`` are matched before FastAPI sees the scope
(``GatewayApp.direct_websockets``), because FastAPI's router, middleware and exception wrappers
stay suspended, with two ``AsyncExitStack``s, for the whole life of every connection. Here the
same endpoint is registered as an ordinary FastAPI WebSocket route, as the gateway did before.

    python -m loadtest.experiments.fastapi_route serve --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import sys
from typing import Any

import gateway.app
from gateway.cli import main

_shipped_create_app = gateway.app.create_app


def create_app(settings: Any = None) -> gateway.app.GatewayApp:
    app = _shipped_create_app(settings)
    for route in app.direct_websockets:
        app.add_api_websocket_route(route.path, route.endpoint)
    app.direct_websockets = ()
    return app


def install() -> None:
    gateway.app.create_app = create_app


if __name__ == "__main__":
    install()
    sys.exit(main(sys.argv[1:]))
