"""The ASGI application: routes, lifespan, and the hub they share.

``create_app`` reads settings when called, never at import, so tests build apps with their own
settings; ``gateway.app:app`` (what gunicorn and the Dockerfile name) builds one on first access.

The chat WebSockets (``/ws`` and ``/ws/{client_id}``) do not go through FastAPI's router: a
WebSocket routed there keeps the router, middleware and exception-wrapper coroutines (and two
``AsyncExitStack``s) suspended for the connection's whole life, about 11 KiB per idle
connection, for nothing the chat uses. :class:`GatewayApp` matches those two paths with
Starlette's own route matching and calls the connection handler directly; every other scope
(HTTP, lifespan, any other WebSocket path, which FastAPI refuses as before) is FastAPI's.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.routing import Match, WebSocketRoute
from starlette.types import Receive, Scope, Send

from gateway import __version__, tracing
from gateway import metrics as gateway_metrics
from gateway.broker import BrokerUnavailable
from gateway.hub import Hub
from gateway.protocol import ProtocolError, is_valid_room, is_valid_user
from gateway.settings import Settings, load_settings
from gateway.transport import serve_connection

STATIC_DIR = files("gateway") / "static"


class GatewayApp(FastAPI):
    """FastAPI, with some WebSocket routes served directly (see the module docstring)."""

    direct_websockets: tuple[WebSocketRoute, ...] = ()
    """Matched as Starlette's router would match them, before FastAPI sees the scope; the
    endpoint gets the ``WebSocket`` (path parameters in ``websocket.path_params``)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            for route in self.direct_websockets:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)
                    with tracing.connection_span(scope, route.path):
                        await route.endpoint(WebSocket(scope, receive, send))
                    return
        await super().__call__(scope, receive, send)


class PublishRequest(BaseModel):
    text: str
    sender: str = "api"


def create_app(settings: Settings | None = None) -> GatewayApp:
    settings = settings or load_settings()
    tracing_config = tracing.config_from_env()
    hub = Hub(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        tracing.start(tracing_config)
        gateway_metrics.check_multiprocess()
        await hub.start()
        try:
            yield
        finally:
            await hub.aclose()
            tracing.flush()

    app = GatewayApp(title="gateway", version=__version__, lifespan=lifespan, docs_url=None)
    app.state.hub = hub
    if tracing_config.enabled:
        tracing.instrument(app)
    app.state.settings = settings
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR), check_dir=False), name="static")

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
        if hub.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if not hub.ready:
            return JSONResponse({"status": "broker unavailable"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body, content_type = gateway_metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/api/rooms/{room}/presence")
    async def presence(room: str) -> dict[str, Any]:
        _require_room(room)
        try:
            online = await hub.presence.online(room)
        except BrokerUnavailable:
            raise HTTPException(503, "presence unavailable: broker unreachable") from None
        return {"room": room, "online": online, "count": len(online)}

    def api_key(authorization: str = Header("")) -> None:
        """A dependency, so an unauthenticated caller gets 401 before the body is validated."""
        _require_api_key(settings, authorization)

    @app.post("/api/rooms/{room}/messages", status_code=202, dependencies=[Depends(api_key)])
    async def publish(room: str, body: PublishRequest) -> dict[str, Any]:
        _require_room(room)
        checked = hub.codec.check_text(body.text)
        if isinstance(checked, ProtocolError):
            raise HTTPException(422, {"code": checked.code.value, "detail": checked.detail})
        if not is_valid_user(body.sender):
            raise HTTPException(422, {"code": "invalid", "detail": "invalid sender"})
        try:
            envelope = await hub.publish_message(room, body.sender, checked)
        except BrokerUnavailable:
            raise HTTPException(503, "broker unavailable; nothing was published") from None
        return {"id": envelope.event["id"], "room": room}

    async def chat(websocket: WebSocket) -> None:
        await serve_connection(websocket, hub, websocket.path_params.get("client_id"))

    app.direct_websockets = (WebSocketRoute("/ws", chat), WebSocketRoute("/ws/{client_id}", chat))
    return app


def _require_room(room: str) -> None:
    if not is_valid_room(room):
        raise HTTPException(404, "no such room")


def _require_api_key(settings: Settings, authorization: str) -> None:
    if not settings.api_key:
        raise HTTPException(404, "publish API is off: set GATEWAY_API_KEY")
    scheme, _, key = authorization.partition(" ")
    valid = scheme.lower() == "bearer" and hmac.compare_digest(
        key.encode(), settings.api_key.encode()
    )
    if not valid:
        raise HTTPException(401, "bad API key", headers={"WWW-Authenticate": "Bearer"})


def __getattr__(name: str) -> Any:
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
