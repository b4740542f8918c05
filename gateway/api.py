"""The server API's logic, without HTTP: publish (idempotent), rooms, history, and commands to
every worker. :mod:`gateway.server.api` maps it to routes and :class:`ApiError` to statuses.

**Idempotency.** A publish with an ``Idempotency-Key`` first reserves the key in the broker's
shared store (atomically: Redis ``SET NX`` in a script, fleet-wide), as *pending* with a
fingerprint of the request; only the reserving call publishes, then stores its answer under the
key for ``GATEWAY_IDEMPOTENCY_TTL`` seconds. Any other call with that key, on any worker:

* finds the answer: answers it (``replayed``), publishing nothing;
* finds it pending (the first call is still publishing): polls for up to
  :data:`PENDING_WAIT` seconds, then answers 409 — never a second publication;
* finds another request's fingerprint (same key, other room, sender or text): 422.

A first call whose publication fails gives the key back, so a retry may publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Final

from gateway import metrics
from gateway.broker import Broker, BrokerUnavailable, room_channel
from gateway.control import Control
from gateway.hub import Hub
from gateway.identity import display_form
from gateway.presence import Presence
from gateway.protocol import Codec, ProtocolError, is_valid_room, is_valid_user, parse_message_id

MAX_KEY_CHARS: Final = 128
PENDING_WAIT: Final = 5.0
"""Seconds a repeat waits for the first call with its key to finish publishing."""
PENDING_POLL: Final = 0.02
MAX_LIMIT: Final = 1000
DEFAULT_LIMIT: Final = 100


class ApiError(Exception):
    def __init__(self, status: int, outcome: str, detail: str | dict[str, Any]) -> None:
        super().__init__(detail)
        self.status = status
        self.outcome = outcome
        """Label of ``gateway_api_requests_total``."""
        self.detail = detail


UNAVAILABLE = ApiError(503, "unavailable", "broker unavailable; nothing was done")


@dataclass(frozen=True, slots=True)
class Answer:
    body: dict[str, Any]
    replayed: bool = False


def check_key(key: str | None) -> str | None:
    """An ``Idempotency-Key`` as given, or 400 saying what a key must be."""
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_CHARS or not key.isprintable():
        raise ApiError(
            400,
            "invalid",
            f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} printable characters",
        )
    return key


class ServerApi:
    def __init__(
        self,
        codec: Codec,
        hub: Hub,
        broker: Broker,
        presence: Presence,
        control: Control,
        idempotency_ttl: float,
    ) -> None:
        self.codec = codec
        self.hub = hub
        self.broker = broker
        self.presence = presence
        self.control = control
        self.idempotency_ttl = idempotency_ttl

    async def run(self, operation: str, call: Any) -> Answer:
        """Await ``call`` (an :class:`Answer`), counting its outcome under ``operation``."""
        try:
            answer: Answer = await call
        except ApiError as error:
            metrics.API_REQUESTS.labels(operation, error.outcome).inc()
            raise
        except BrokerUnavailable:
            metrics.API_REQUESTS.labels(operation, "unavailable").inc()
            raise UNAVAILABLE from None
        metrics.API_REQUESTS.labels(operation, "replayed" if answer.replayed else "ok").inc()
        return answer

    # Publish

    async def publish(self, room: str, sender: str, text: object, key: str | None) -> Answer:
        require_room(room)
        checked = self.codec.check_text(text)
        if isinstance(checked, ProtocolError):
            raise ApiError(422, "invalid", {"code": checked.code.value, "detail": checked.detail})
        if not is_valid_user(sender):
            raise ApiError(422, "invalid", {"code": "invalid", "detail": "invalid sender"})
        if key is None:
            return Answer(await self._publish(room, sender, checked))
        return await self._publish_once(room, sender, checked, key)

    async def _publish(self, room: str, sender: str, text: str) -> dict[str, Any]:
        envelope = await self.hub.publish_message(room, sender, text, source="api")
        return {"id": envelope.event["id"], "room": room}

    async def _publish_once(self, room: str, sender: str, text: str, key: str) -> Answer:
        slot = "idempotency:" + hashlib.sha256(key.encode()).hexdigest()
        fingerprint = hashlib.sha256(json.dumps([room, sender, text]).encode()).hexdigest()[:32]
        pending = json.dumps({"fp": fingerprint, "pending": time.time_ns()})
        deadline = time.monotonic() + PENDING_WAIT
        for _ in range(int(PENDING_WAIT / PENDING_POLL) + 2):
            held = await self.broker.put_if_absent(slot, pending, self.idempotency_ttl)
            if held is None:
                return Answer(await self._publish_reserved(slot, pending, room, sender, text))
            state = json.loads(held)
            if state.get("fp") != fingerprint:
                raise ApiError(
                    422, "conflict", "Idempotency-Key already used for a different request"
                )
            if "id" in state:
                return Answer({"id": state["id"], "room": state["room"]}, replayed=True)
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(PENDING_POLL)
        raise ApiError(409, "conflict", "a request with this Idempotency-Key is in progress")

    async def _publish_reserved(
        self, slot: str, pending: str, room: str, sender: str, text: str
    ) -> dict[str, Any]:
        try:
            body = await self._publish(room, sender, text)
        except BrokerUnavailable:
            with contextlib.suppress(BrokerUnavailable):  # else it expires with its TTL
                await self.broker.delete_if(slot, pending)
            raise
        done = json.dumps({**json.loads(pending), **body})
        # Published: should the answer not be stored, a repeat finds the key pending (409),
        # never a second publication.
        with contextlib.suppress(BrokerUnavailable):
            await self.broker.put(slot, done, self.idempotency_ttl)
        return body

    # Reading

    async def rooms(self) -> Answer:
        counts = await self.presence.rooms()
        return Answer({"rooms": [{"room": room, "count": count} for room, count in counts]})

    async def messages(self, room: str, after: str | None, limit: int | None) -> Answer:
        require_room(room)
        since = parse_message_id(after)
        if since is None:
            raise ApiError(422, "invalid", "after must be a message id")
        limit = DEFAULT_LIMIT if limit is None else limit
        if not 1 <= limit <= MAX_LIMIT:
            raise ApiError(422, "invalid", f"limit must be between 1 and {MAX_LIMIT}")
        history = await self.broker.history(room_channel(room), since)
        events = [envelope.event for envelope in history.messages[:limit]]
        return Answer({"room": room, "messages": events, "recovered": history.complete})

    # Commands to every worker

    async def disconnect(self, user: str) -> Answer:
        user = require_user(user)
        connections = await self.presence.connections_of(user)
        await self.control.disconnect(user)
        return Answer({"user": user, "connections": connections})

    async def remove_member(self, room: str, user: str) -> Answer:
        require_room(room)
        user = require_user(user)
        await self.control.remove(room, user)
        return Answer({"room": room, "user": user})


def require_room(room: str) -> None:
    if not is_valid_room(room):
        raise ApiError(404, "not_found", "no such room: not a valid room name")


def require_user(user: str) -> str:
    name = display_form(user)
    if not is_valid_user(name):
        raise ApiError(404, "not_found", "no such user: not a valid user name")
    return name
