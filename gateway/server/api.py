"""The server API's routes (bearer ``GATEWAY_API_KEY``): the HTTP face of
:class:`gateway.api.ServerApi`, whose :class:`~gateway.api.ApiError` becomes the status.

The guard (:mod:`gateway.server.httpguard`) refuses a body without the key before it is read;
the ``api_key`` dependency answers 401/404 on every route, bodies or not, before validation.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from gateway.api import Answer, ApiError, check_key
from gateway.node import Node
from gateway.server.httpguard import api_key_refusal
from gateway.settings import Settings

REPLAYED_HEADER = "Idempotent-Replayed"


class PublishRequest(BaseModel):
    text: str
    sender: str = "api"


def server_api(app: FastAPI, node: Node) -> None:
    settings, api = node.settings, node.api

    def api_key(authorization: str = Header("")) -> None:
        """A dependency, so an unauthenticated caller gets 401 before the body is validated."""
        require_api_key(settings, authorization)

    guarded: Any = {"dependencies": [Depends(api_key)]}

    @app.post("/api/rooms/{room}/messages", status_code=202, **guarded)
    async def publish(
        room: str,
        body: PublishRequest,
        idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
    ) -> JSONResponse:
        async def call() -> Answer:
            return await api.publish(room, body.sender, body.text, check_key(idempotency_key))

        answer = await _answer(api.run("publish", call()))
        headers = {REPLAYED_HEADER: "true"} if answer.replayed else None
        return JSONResponse(answer.body, status_code=202, headers=headers)

    @app.get("/api/rooms", **guarded)
    async def rooms() -> dict[str, Any]:
        return (await _answer(api.run("rooms", api.rooms()))).body

    @app.get("/api/rooms/{room}/messages", **guarded)
    async def messages(
        room: str, after: str | None = None, limit: int | None = Query(None)
    ) -> dict[str, Any]:
        return (await _answer(api.run("messages", api.messages(room, after, limit)))).body

    @app.post("/api/users/{user}/disconnect", status_code=202, **guarded)
    async def disconnect(user: str) -> dict[str, Any]:
        return (await _answer(api.run("disconnect", api.disconnect(user)))).body

    @app.delete("/api/rooms/{room}/members/{user}", status_code=202, **guarded)
    async def remove_member(room: str, user: str) -> dict[str, Any]:
        call = api.remove_member(room, user)
        return (await _answer(api.run("remove_member", call))).body


async def _answer(call: Any) -> Answer:
    try:
        answer: Answer = await call
    except ApiError as error:
        raise HTTPException(error.status, error.detail) from None
    return answer


def require_api_key(settings: Settings, authorization: str) -> None:
    refusal = api_key_refusal(settings.api_key, authorization)
    if refusal is not None:
        status, detail = refusal
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        raise HTTPException(status, detail, headers=headers)
