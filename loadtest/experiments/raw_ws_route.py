"""Experiment: route ``/ws/{client_id}`` straight to the gateway's connection handler.

The tracemalloc breakdown of an idle connection (RESULTS.md) shows about a third of its
Python heap held by the FastAPI/Starlette stack that stays suspended for the connection's whole
life: router, middleware chain, exception wrappers and two ``AsyncExitStack``s per WebSocket.
Here a thin ASGI callable in front of the app hands WebSocket scopes for ``/ws/{client_id}``
directly to ``gateway.transport.serve_connection``; everything else (HTTP, lifespan, ``/ws``)
still goes through FastAPI. (The FastAPI OpenTelemetry middleware then does not see these
WebSocket scopes; the gateway's own broadcast spans are unaffected.)

    python -m loadtest.experiments.raw_ws_route serve --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import sys
from typing import Any

from starlette.websockets import WebSocket

import gateway.app
from gateway.cli import main
from gateway.transport import serve_connection

_original_create_app = gateway.app.create_app


def create_app(settings: Any = None) -> Any:
    app = _original_create_app(settings)
    hub = app.state.hub

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            path: str = scope["path"]
            client_id = path[4:] if path.startswith("/ws/") else ""
            if client_id and "/" not in client_id:
                await serve_connection(WebSocket(scope, receive, send), hub, client_id)
                return
        await app(scope, receive, send)

    asgi.state = app.state  # type: ignore[attr-defined]
    return asgi


def install() -> None:
    gateway.app.create_app = create_app  # type: ignore[assignment]


if __name__ == "__main__":
    install()
    sys.exit(main(sys.argv[1:]))
