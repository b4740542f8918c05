"""A Python client for the gateway: bots, backend services and load tests speak to it with this.

Importable without the server's dependencies (only the standard library and ``websockets``), so
a bot's environment does not carry FastAPI, uvicorn or Redis. Usage::

    async with Client("ws://127.0.0.1:8000", "bot", rooms=["support"]) as client:
        async for event in client:
            if isinstance(event, Message) and event.sender != "bot":
                await client.send(event.room, f"echo: {event.text}")

See :class:`Client` for reconnects, resume and token refresh.
"""

from gateway.client.backoff import Plan, backoff_delay, plan_reconnect
from gateway.client.client import Client, ClientClosed, ClientError, NotConnected
from gateway.client.events import (
    Connected,
    Direct,
    Disconnected,
    Error,
    Event,
    Joined,
    Left,
    Message,
    Pong,
    Presence,
    Reconnect,
    Recovered,
    Refreshed,
    RefreshFailed,
    Resumed,
    Unknown,
    parse_event,
)
from gateway.client.rooms import RoomHistory, RoomLog, compare_ids
from gateway.client.token import jwt_expiry, refresh_delay

__all__ = [
    "Client",
    "ClientClosed",
    "ClientError",
    "Connected",
    "Direct",
    "Disconnected",
    "Error",
    "Event",
    "Joined",
    "Left",
    "Message",
    "NotConnected",
    "Plan",
    "Pong",
    "Presence",
    "Reconnect",
    "Recovered",
    "RefreshFailed",
    "Refreshed",
    "Resumed",
    "RoomHistory",
    "RoomLog",
    "Unknown",
    "backoff_delay",
    "compare_ids",
    "jwt_expiry",
    "parse_event",
    "plan_reconnect",
    "refresh_delay",
]
