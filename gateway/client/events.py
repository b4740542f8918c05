"""Typed server events: one frozen dataclass per ``type`` of the wire protocol.

A bot should match on classes (``isinstance`` or ``match``), not on dictionaries whose keys it
has to remember; and the client needs typed events itself to keep its resume bookkeeping
honest. Every event keeps the object it came from in ``raw``, so a field the server adds later
is never lost to a client that predates it. Parsing is lenient on purpose: a server newer than
this client must not make it crash, so missing fields get neutral defaults and unknown types
become :class:`Unknown`.

Besides the wire events, the client itself reports what happened to the connection
(:class:`Connected`, :class:`Disconnected`), what history could not give back
(:class:`Recovered`) and a token refresh that failed (:class:`RefreshFailed`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Raw = dict[str, Any]


def _text(value: object, default: str = "") -> str:
    return default if value is None else str(value)


def _int(value: object, default: int = 0) -> int:
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError):
        return default


def _names(value: object) -> tuple[str, ...]:
    return tuple(str(name) for name in value) if isinstance(value, list) else ()


@dataclass(frozen=True, slots=True)
class Message:
    """A chat message of a room. ``id`` is a decimal string, increasing within the room."""

    id: str
    room: str
    sender: str
    text: str
    ts: float | None = None
    source: str | None = None
    """``"api"`` when published through the server API."""
    raw: Raw = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Direct:
    """A direct message (the sender's own connections get a copy too)."""

    sender: str
    to: str
    text: str
    ts: float | None = None
    raw: Raw = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Presence:
    """Who came and went in a room. ``event`` is ``joined``/``left`` (one change, ``user`` set),
    ``diff`` (several in one window: ``joined_users``/``left_users``) or ``count`` (a large
    room: only ``online``). ``online`` is always the room's member count."""

    room: str
    event: str
    online: int
    user: str | None = None
    joined_users: tuple[str, ...] = ()
    left_users: tuple[str, ...] = ()
    raw: Raw = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Joined:
    """The server's acknowledgement of a join (and of the lobby on connect). ``last_id`` is the
    room's newest id when the subscription began; the client resumes from it by itself."""

    room: str
    online: tuple[str, ...]
    count: int
    last_id: str | None
    raw: Raw = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Left:
    """The server's acknowledgement of a leave (or of a removal through the server API)."""

    room: str
    raw: Raw = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Resumed:
    """A resume's answer: ``count`` messages replayed; ``recovered`` false when history no
    longer reached back (the client also reports that as :class:`Recovered`)."""

    room: str
    recovered: bool
    count: int
    raw: Raw = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Error:
    """An ``error`` event: ``code`` is rate_limited, too_large, invalid, forbidden,
    unknown_room or unavailable. The connection stays open."""

    code: str
    detail: str
    raw: Raw = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to :meth:`Client.ping`."""

    raw: Raw = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Reconnect:
    """The server is about to drain this connection; the client waits ``after_ms`` first."""

    after_ms: int
    raw: Raw = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Refreshed:
    """A token refresh was accepted: the connection now lives until ``exp`` (unix seconds)."""

    exp: int
    raw: Raw = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Unknown:
    """An event of a type this client does not know (a newer server): passed on untouched."""

    type: str
    raw: Raw = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Recovered:
    """Messages of ``room`` after ``after`` may be missing: the server's history no longer
    reached back that far (``reason`` says why). Emitted before the messages that follow the
    gap, so a consumer can mark the spot."""

    room: str
    after: str
    recovered: bool = False
    reason: str = "history no longer reaches back"


@dataclass(frozen=True, slots=True)
class Connected:
    """A session is up: the server acknowledged the lobby. ``reconnected`` after a drop."""

    user: str
    reconnected: bool


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection ended. ``retry_in`` is the wait before the next attempt, ``None`` when
    the client stays offline (then iteration ends after this event)."""

    code: int
    reason: str
    retry_in: float | None


@dataclass(frozen=True, slots=True)
class RefreshFailed:
    """The token callback raised (or returned nothing usable); the client tries again."""

    detail: str


ServerEvent = (
    Message | Direct | Presence | Joined | Left | Resumed | Error | Pong | Reconnect | Refreshed
)
Event = ServerEvent | Unknown | Recovered | Connected | Disconnected | RefreshFailed


def _ts(raw: Raw) -> float | None:
    value = raw.get("ts")
    return float(value) if isinstance(value, int | float) else None


def _message(raw: Raw) -> Message:
    source = raw.get("source")
    return Message(
        _text(raw.get("id")),
        _text(raw.get("room")),
        _text(raw.get("from")),
        _text(raw.get("text")),
        _ts(raw),
        None if source is None else str(source),
        raw,
    )


def _presence(raw: Raw) -> Presence:
    user = raw.get("user")
    return Presence(
        _text(raw.get("room")),
        _text(raw.get("event")),
        _int(raw.get("online")),
        None if user is None else str(user),
        _names(raw.get("joined")),
        _names(raw.get("left")),
        raw,
    )


def _joined(raw: Raw) -> Joined:
    online = _names(raw.get("online"))
    last_id = raw.get("last_id")
    count = _int(raw.get("count"), len(online))
    return Joined(
        _text(raw.get("room")), online, count, None if last_id is None else str(last_id), raw
    )


def parse_event(raw: Raw) -> ServerEvent | Unknown:
    """The typed form of one server event object."""
    kind = _text(raw.get("type"))
    if kind == "message":
        return _message(raw)
    if kind == "direct":
        text = _text(raw.get("text"))
        return Direct(_text(raw.get("from")), _text(raw.get("to")), text, _ts(raw), raw)
    if kind == "presence":
        return _presence(raw)
    if kind == "joined":
        return _joined(raw)
    if kind == "left":
        return Left(_text(raw.get("room")), raw)
    if kind == "resumed":
        recovered = raw.get("recovered") is not False
        return Resumed(_text(raw.get("room")), recovered, _int(raw.get("count")), raw)
    if kind == "error":
        return Error(_text(raw.get("code")), _text(raw.get("detail")), raw)
    return _control(kind, raw)


def _control(kind: str, raw: Raw) -> ServerEvent | Unknown:
    if kind == "pong":
        return Pong(raw)
    if kind == "reconnect":
        return Reconnect(max(_int(raw.get("after_ms")), 0), raw)
    if kind == "refreshed":
        return Refreshed(_int(raw.get("exp")), raw)
    return Unknown(kind, raw)
