"""The ASGI application: routes and lifespan around one :class:`~gateway.node.Node`.

``create_app`` reads settings when called, never at import, so tests build apps with their own
settings; :mod:`gateway.app` (``gateway.app:app``, what gunicorn and the Dockerfile name) builds
one on first access.

The chat WebSockets (``/ws`` and ``/ws/{client_id}``) do not go through FastAPI's router: a
WebSocket routed there keeps the router, middleware and exception-wrapper coroutines (and two
``AsyncExitStack``s) suspended for the connection's whole life, about 11 KiB per idle
connection, for nothing the chat uses. :class:`GatewayApp` matches those two paths with
Starlette's own route matching and calls the connection handler directly; every other scope
(HTTP, lifespan, any other WebSocket path, which FastAPI refuses as before) is FastAPI's;
HTTP goes through :class:`gateway.server.httpguard.HttpGuard` first (headers, bodies refused
unread).

``/docs``, ``/redoc`` and ``/openapi.json`` exist only with ``GATEWAY_API_DOCS``; their
scripts and styles are served from here (``fastapi-offline`` ships Swagger UI and ReDoc), as
the Content-Security-Policy requires.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.routing import Match, WebSocketRoute
from starlette.types import Receive, Scope, Send

from gateway import __version__, tracing
from gateway import metrics as gateway_metrics
from gateway.auth import TokenError
from gateway.broker import BrokerUnavailable
from gateway.node import Node
from gateway.protocol import is_valid_room
from gateway.server.api import server_api
from gateway.server.apidocs import serve_docs
from gateway.server.httpguard import HttpGuard, api_key_refusal
from gateway.server.instrumentation import instrument
from gateway.server.transport import serve_connection
from gateway.settings import Settings, load_settings

STATIC_DIR = files("gateway") / "static"


class GatewayApp(FastAPI):
    """FastAPI, with some WebSocket routes served directly (see the module docstring)."""

    direct_websockets: tuple[WebSocketRoute, ...] = ()
    """Matched as Starlette's router would match them, before FastAPI sees the scope; the
    endpoint gets the ``WebSocket`` (path parameters in ``websocket.path_params``)."""
    http_guard: HttpGuard | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.http_guard is not None:
            await self.http_guard(scope, receive, send)
            return
        if scope["type"] == "websocket":
            for route in self.direct_websockets:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)
                    with tracing.connection_span(scope, route.path):
                        await route.endpoint(WebSocket(scope, receive, send))
                    return
        await super().__call__(scope, receive, send)

    async def serve_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """What the guard hands a request it lets through."""
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> GatewayApp:
    settings = settings or load_settings()
    tracing_config = tracing.config_from_env()
    node = Node(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        tracing.start(tracing_config)
        gateway_metrics.check_multiprocess()
        await node.start()
        try:
            yield
        finally:
            await node.aclose()
            tracing.flush()

    app = GatewayApp(
        title="gateway",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.api_docs else None,
    )
    app.http_guard = HttpGuard(app.serve_http, settings.api_key)
    app.state.node = node
    app.state.settings = settings
    if tracing_config.enabled:
        instrument(app)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR), check_dir=False), name="static")
    _page_and_probes(app, node)
    _presence_api(app, node)
    server_api(app, node)
    if settings.api_docs:
        serve_docs(app)

    async def chat(websocket: WebSocket) -> None:
        await serve_connection(websocket, node, websocket.path_params.get("client_id"))

    app.direct_websockets = (WebSocketRoute("/ws", chat), WebSocketRoute("/ws/{client_id}", chat))
    return app


def _page_and_probes(app: FastAPI, node: Node) -> None:
    @app.get("/", include_in_schema=False)
    async def chat_page() -> Response:
        page = STATIC_DIR / "index.html"
        if not page.is_file():
            return Response("chat page not installed", status_code=404)
        return FileResponse(str(page), media_type="text/html")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if node.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if not node.ready:
            return JSONResponse({"status": "broker unavailable"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body, content_type = gateway_metrics.exposition()
        return Response(body, media_type=content_type)


def _presence_api(app: FastAPI, node: Node) -> None:
    settings, authenticator = node.settings, node.admission.authenticator

    def presence_reader(room: str, authorization: str = Header("")) -> None:
        """With auth on, the API key or a JWT granting the room (as the chat would to join)."""
        if authenticator is None or api_key_refusal(settings.api_key, authorization) is None:
            return
        scheme, _, token = authorization.partition(" ")
        try:
            if scheme.lower() == "bearer" and authenticator.verify(token).may_join(room):
                return
        except TokenError:
            pass
        raise HTTPException(
            401,
            "presence needs the API key or a token for the room",
            {"WWW-Authenticate": "Bearer"},
        )

    @app.get("/api/rooms/{room}/presence", dependencies=[Depends(presence_reader)])
    async def presence(room: str, limit: int = Query(1000, ge=0, le=100_000)) -> dict[str, Any]:
        """Names whatever the room's size (the API is where a large room's names are read)."""
        _require_room(room)
        try:
            count, names = await node.presence.snapshot(room, limit)
        except BrokerUnavailable:
            raise HTTPException(503, "presence unavailable: broker unreachable") from None
        return {"room": room, "count": count, "online": names, "truncated": count > limit}


def _require_room(room: str) -> None:
    if not is_valid_room(room):
        raise HTTPException(404, "no such room")
