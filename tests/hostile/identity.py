"""Probes of who may hold a ``client_id``: connect and see whether the gateway admitted it.

A refused duplicate is accepted and then closed (1008), so "admitted" means the lobby's
``joined`` arrived; a handshake refusal (HTTP 403) is told apart as its status.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.clients import open_ws
from tests.support.servers import GatewayProcess, scaled

LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
"""What ``str.splitlines`` breaks on: the SPEC's LF, CR, VT, FF, NEL, U+2028, U+2029 and the
three ASCII separators a Python client would split on too."""


@dataclass
class Outcome:
    admitted: bool
    code: int | None = None
    """Close code when refused after the upgrade; HTTP status when refused before it."""
    reason: str = ""
    ws: ClientConnection | None = None


def path_for(user: str | None, query: str = "") -> str:
    return ("/ws" if user is None else f"/ws/{quote(user, safe='')}") + query


async def connect_as(
    server: GatewayProcess, user: str | None, query: str = "", timeout: float = 10
) -> Outcome:
    """Open ``/ws/<user>`` and wait for ``joined`` or the close; an admitted socket stays open."""
    try:
        ws = await open_ws(server.ws_url(path_for(user, query)))
    except InvalidStatus as refused:
        return Outcome(False, refused.response.status_code, refused.response.body.decode())
    try:
        async with asyncio.timeout(scaled(timeout)):
            while True:
                frame = await ws.recv()
                assert isinstance(frame, str)
                for line in frame.split("\n"):
                    if line and json.loads(line).get("type") == "joined":
                        return Outcome(True, ws=ws)
    except ConnectionClosed:
        close = ws.protocol.close_rcvd
        if close is None:
            return Outcome(False, 1006)
        return Outcome(False, close.code, close.reason)


async def leave(outcome: Outcome) -> None:
    if outcome.ws is not None:
        await outcome.ws.close()


def breaks_in(frame: str) -> list[str]:
    return [hex(ord(char)) for char in frame if char in LINE_BREAKS]
