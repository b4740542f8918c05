"""The broker interface: what the hub needs from whatever carries messages between workers.

A broker assigns each kept message its per-channel id, keeps a bounded history for resume, and
delivers every publication to the local ``deliver`` callback of each worker subscribed to the
channel. Backends are chosen by URL (:func:`gateway.broker.create_broker`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class BrokerUnavailable(RuntimeError):
    """The broker cannot take the publication now; nothing was published."""


@dataclass(slots=True)
class Envelope:
    """One publication as it travels between workers.

    ``event`` is the server event exactly as a JSON client receives it; the broker fills in
    ``event["id"]`` for kept messages. ``accepted_at`` (epoch seconds on the accepting worker)
    feeds the delivery-latency histogram; ``trace`` carries the W3C trace context.
    """

    channel: str
    event: dict[str, Any]
    accepted_at: float
    seq: int = 0
    trace: dict[str, str] = field(default_factory=dict)

    def dumps(self) -> str:
        return json.dumps(
            {
                "c": self.channel,
                "e": self.event,
                "a": self.accepted_at,
                "s": self.seq,
                "t": self.trace,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def loads(cls, raw: str | bytes) -> Envelope:
        data = json.loads(raw)
        return cls(data["c"], data["e"], data["a"], data["s"], data.get("t") or {})


@dataclass(frozen=True, slots=True)
class History:
    messages: list[Envelope]
    complete: bool
    """False when the history no longer reaches back to the requested id: a gap is unavoidable."""


DeliverFn = Callable[[Envelope], None]


ROOM_PREFIX = "room:"
USER_PREFIX = "user:"
"""Channel names: the one place that builds and reads them (rooms and users never collide)."""
CONTROL_CHANNEL = "control"
"""Commands to every worker (:mod:`gateway.control`); every worker subscribes to it."""


def room_channel(room: str) -> str:
    return ROOM_PREFIX + room


def user_channel(user: str) -> str:
    return USER_PREFIX + user


def room_of(channel: str) -> str | None:
    """The room a channel carries, or None for a user's channel."""
    return channel[len(ROOM_PREFIX) :] if channel.startswith(ROOM_PREFIX) else None


class Broker(ABC):
    def __init__(self, deliver: DeliverFn, history_size: int) -> None:
        self.deliver = deliver
        self.history_size = history_size

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect; called in the worker process, never before a fork."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections and background tasks."""

    @property
    def ready(self) -> bool:
        return True

    @abstractmethod
    async def publish(self, envelope: Envelope, *, keep: bool) -> Envelope:
        """Fan out to every subscribed worker; ``keep`` assigns the id and appends to history."""

    @abstractmethod
    async def subscribe(self, channel: str) -> None: ...

    @abstractmethod
    async def unsubscribe(self, channel: str) -> None: ...

    @abstractmethod
    async def history(self, channel: str, after: int) -> History:
        """Kept messages with ``seq > after``, oldest first."""

    @abstractmethod
    async def last_id(self, channel: str) -> int:
        """The channel's newest id over every worker (0 for none yet).

        Read after :meth:`subscribe` returns, it splits the ids a new member hears live (above
        it) from those it can only get from :meth:`history` (up to it): no gap between the two.
        """

    # A small shared store with expiry (idempotency keys of the server API)

    @abstractmethod
    async def put_if_absent(self, key: str, value: str, ttl: float) -> str | None:
        """Store ``value`` under ``key`` for ``ttl`` seconds unless the key holds a value:
        None when stored, else the value already there. Atomic over the fleet."""

    @abstractmethod
    async def put(self, key: str, value: str, ttl: float) -> None:
        """Overwrite ``key`` with ``value`` for ``ttl`` seconds."""

    @abstractmethod
    async def delete_if(self, key: str, value: str) -> None:
        """Remove ``key`` if it still holds ``value``."""
