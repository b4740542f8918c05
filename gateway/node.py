"""The composition root: one worker's gateway, built from settings, started and stopped as one.

Centrifuge's ``Node`` is the model. Everything a worker shares between its connections is made
here and handed to whoever needs it, so no collaborator builds another or reaches through one
to get a third: the broker (fanning out into the hub), presence, the rate limiters, the
handshake policy, the hub, the services every session shares, and the ids. The server layer
builds one node per worker (after a fork, never before) and asks it for sessions; the drain
reads its registry of running connections.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

from gateway import logs
from gateway.admission import Admission
from gateway.api import ServerApi
from gateway.broker import CONTROL_CHANNEL, Envelope, create_broker
from gateway.control import Control
from gateway.hooks import Hooks
from gateway.hub import Hub
from gateway.outbox import Outbox
from gateway.presence import create_presence
from gateway.protocol import Codec, WireFormat
from gateway.ratelimit import message_limiter
from gateway.session import Session, SessionServices
from gateway.settings import Settings


class Node:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        logs.install_log_redaction()
        self.codec = Codec(settings.max_message_bytes)
        self.broker = create_broker(
            settings.broker_url,
            self._deliver,
            settings.history_size,
            min_replicas=settings.broker_min_replicas,
        )
        self.presence = create_presence(
            settings.broker_url, settings.presence_ttl, settings.heartbeat_timeout
        )
        self.message_limit = message_limiter(settings.rate_limit, settings.broker_url)
        self.hooks = Hooks(settings, self.codec) if settings.hook_url else None
        self.admission = Admission(settings, self.hooks)
        self.hub = Hub(settings, self.broker, self.presence, self.hooks)
        self.control = Control(self.broker, self.hub)
        self.api = ServerApi(
            self.codec,
            self.hub,
            self.broker,
            self.presence,
            self.control,
            settings.idempotency_ttl,
        )
        self.services = SessionServices(
            rooms=self.hub,
            codec=self.codec,
            broker=self.broker,
            presence=self.presence,
            message_limit=self.message_limit,
            command_rate=settings.command_rate_limit,
            strikes=settings.rate_limit_strikes,
            authenticator=self.admission.authenticator,
            auth_leeway=settings.auth_leeway,
            hooks=self.hooks,
        )
        self._anonymous_ids = itertools.count(self._first_anonymous_id(settings))
        self._connection_ids = itertools.count(1)
        self.draining = False
        """Set by :func:`gateway.drain.drain`: readiness off, new connections sent away."""
        self.connections: dict[Session, asyncio.Task[Any]] = {}
        """Every running connection task, attached or not (yet), so a drain can wait for its
        last ``left`` event and cut it at the deadline."""

    def _deliver(self, envelope: Envelope) -> None:
        """The broker's callback, bound before the hub exists: the two need each other."""
        if envelope.channel == CONTROL_CHANNEL:
            self.control.apply(envelope)
        else:
            self.hub.deliver(envelope)

    async def start(self) -> None:
        await self.broker.start()
        await self.presence.start()
        await self.control.start()
        self.hub.start()

    async def aclose(self) -> None:
        await self.control.aclose()
        await self.hub.aclose()
        if self.hooks is not None:
            await self.hooks.aclose()
        await self.presence.aclose()
        await self.broker.aclose()
        await self.message_limit.aclose()
        await self.admission.aclose()

    @property
    def ready(self) -> bool:
        """Whether this worker should take new connections (``/readyz``)."""
        return not self.draining and self.broker.ready

    def name_for(self, user: str | None) -> str:
        """The identity's name; ``None`` (anonymous) gets the next ``anonymous-<n>``."""
        return user if user is not None else f"anonymous-{next(self._anonymous_ids)}"

    def new_session(self, user: str | None, wire: WireFormat, outbox: Outbox) -> Session:
        """A session for an admitted connection; ``user=None`` is anonymous (named here)."""
        name = self.name_for(user)
        connection_id = f"{id(self):x}-{next(self._connection_ids)}"
        return Session(self.services, name, connection_id, wire, outbox)

    def track(self, session: Session, task: asyncio.Task[Any]) -> None:
        """List the connection's task until it (cleanup included) ends."""
        self.connections[session] = task
        task.add_done_callback(lambda _: self.connections.pop(session, None))

    @staticmethod
    def _first_anonymous_id(settings: Settings) -> int:
        """One process counts from 1 like the seed; a fleet's workers must not hand out twins."""
        return 1 if not settings.uses_shared_broker else random.randrange(10**9) * 10**6 + 1
