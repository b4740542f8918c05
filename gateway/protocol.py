"""The wire protocol, sans I/O: client text in, typed commands out; server events in, text out.

Nothing here touches a socket, so every rule of the SPEC's two wire formats (the seed's plain
text and JSON) is unit-tested and fuzzed with plain values. Parsing never raises: anything a
client can send maps to a command or to a :class:`ProtocolError` with a spec'd error code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, Final, TypeGuard

ROOM_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
USER_PATTERN: Final = re.compile(
    r"[^\x00-\x1f\x7f-\x9f/\\\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ud800-\udfff]{1,64}"
)
"""Any printable name up to 64 characters, but no C0/C1 controls, no slashes, no line or
paragraph separator, no invisible or bidirectional formatting characters (a name must look like
what it is) and no lone surrogates (which JSON escapes can carry but UTF-8 cannot encode)."""
LINE_BREAKS: Final = re.compile("[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
"""What starts a new line for some reader (``str.splitlines`` breaks on all of these)."""
DEFAULT_ROOM: Final = "lobby"
MAX_MESSAGE_ID: Final = 2**63
"""Ids are 64-bit sequence numbers (what Redis counters hold); a larger ``after`` is invalid."""


class WireFormat(Enum):
    """A connection's frame format. Hashed by identity: every recipient of a fan-out looks its
    frame up by format, and ``Enum.__hash__`` is a Python call (members are singletons)."""

    TEXT = "text"
    JSON = "json"

    __hash__ = object.__hash__


class ErrorCode(StrEnum):
    RATE_LIMITED = "rate_limited"
    TOO_LARGE = "too_large"
    INVALID = "invalid"
    FORBIDDEN = "forbidden"
    UNKNOWN_ROOM = "unknown_room"
    UNAVAILABLE = "unavailable"
    """Extension: the broker could not take the message; nothing was published."""


@dataclass(frozen=True, slots=True)
class ProtocolError:
    code: ErrorCode
    detail: str


@dataclass(frozen=True, slots=True)
class SendMessage:
    room: str | None
    """``None``: the connection's current room."""
    text: str


@dataclass(frozen=True, slots=True)
class SendDirect:
    to: str
    text: str


@dataclass(frozen=True, slots=True)
class Join:
    room: str


@dataclass(frozen=True, slots=True)
class Leave:
    room: str


@dataclass(frozen=True, slots=True)
class Resume:
    room: str
    after: int


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Refresh:
    token: str
    """A new JWT for the same ``sub`` (see :mod:`gateway.auth`)."""


Command = SendMessage | SendDirect | Join | Leave | Resume | Ping | Refresh


def is_valid_room(room: object) -> TypeGuard[str]:
    return isinstance(room, str) and ROOM_PATTERN.fullmatch(room) is not None


def is_valid_user(user: object) -> TypeGuard[str]:
    return isinstance(user, str) and USER_PATTERN.fullmatch(user) is not None


class Codec:
    """Parses client frames under the limits of one deployment."""

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes

    def parse(self, frame: str, wire: WireFormat) -> Command | ProtocolError:
        if wire is WireFormat.JSON and frame.lstrip().startswith("{"):
            return self._parse_json(frame)
        if wire is WireFormat.TEXT and frame.startswith("/"):
            return self._parse_slash_command(frame)
        return self._text_or_error(frame, lambda text: SendMessage(None, text))

    def check_text(self, text: object) -> str | ProtocolError:
        if not isinstance(text, str):
            return ProtocolError(ErrorCode.INVALID, "text must be a string")
        if not text.strip():
            return ProtocolError(ErrorCode.INVALID, "Invalid message format: empty message")
        try:
            size = len(text) if len(text) > self.max_message_bytes else len(text.encode())
        except UnicodeEncodeError:
            return ProtocolError(ErrorCode.INVALID, "text is not valid Unicode (lone surrogate)")
        if size > self.max_message_bytes:
            return ProtocolError(
                ErrorCode.TOO_LARGE, f"Message too large: at most {self.max_message_bytes} bytes"
            )
        return text

    def _text_or_error(self, text: object, make: Any) -> Command | ProtocolError:
        checked = self.check_text(text)
        return checked if isinstance(checked, ProtocolError) else make(checked)

    def _parse_slash_command(self, frame: str) -> Command | ProtocolError:
        verb, _, rest = frame.partition(" ")
        if verb == "/join":
            return _room_command(rest.strip(), Join)
        if verb == "/leave":
            return _room_command(rest.strip(), Leave)
        if verb == "/msg":
            to, _, text = rest.partition(" ")
            if not is_valid_user(to):
                return ProtocolError(ErrorCode.INVALID, "Invalid message format: /msg user text")
            return self._text_or_error(text, lambda checked: SendDirect(to, checked))
        return self._text_or_error(frame, lambda text: SendMessage(None, text))

    def _parse_json(self, frame: str) -> Command | ProtocolError:
        if len(frame) > 4 * self.max_message_bytes + 1024:
            return ProtocolError(ErrorCode.TOO_LARGE, "frame too large for one message")
        try:
            data = json.loads(frame)
        except (ValueError, RecursionError):
            return ProtocolError(ErrorCode.INVALID, "malformed JSON")
        if not isinstance(data, dict):
            return ProtocolError(ErrorCode.INVALID, "expected a JSON object")
        kind = data.get("type")
        if kind == "message":
            room = data.get("room")
            if room is not None and not is_valid_room(room):
                return ProtocolError(ErrorCode.INVALID, "invalid room name")
            return self._text_or_error(data.get("text"), lambda text: SendMessage(room, text))
        if kind == "direct":
            to = data.get("to")
            if not is_valid_user(to):
                return ProtocolError(ErrorCode.INVALID, "invalid recipient")
            return self._text_or_error(data.get("text"), lambda text: SendDirect(to, text))
        if kind == "join":
            return _room_command(data.get("room"), Join)
        if kind == "leave":
            return _room_command(data.get("room"), Leave)
        if kind == "resume":
            room = data.get("room")
            if not is_valid_room(room):
                return ProtocolError(ErrorCode.INVALID, "invalid room name")
            after = parse_message_id(data.get("after"))
            if after is None:
                return ProtocolError(ErrorCode.INVALID, "after must be a message id")
            return Resume(room, after)
        if kind == "ping":
            return Ping()
        if kind == "refresh":
            token = data.get("token")
            if not isinstance(token, str) or not token:
                return ProtocolError(ErrorCode.INVALID, "token must be a non-empty string")
            return Refresh(token)
        return ProtocolError(ErrorCode.INVALID, f"unknown message type: {str(kind)[:32]!r}")


def _room_command(room: object, make: type[Join] | type[Leave]) -> Command | ProtocolError:
    if not is_valid_room(room):
        return ProtocolError(ErrorCode.INVALID, "invalid room name")
    assert isinstance(room, str)
    return make(room)


def parse_message_id(raw: object) -> int | None:
    """Ids are decimal strings of a per-room sequence; ``""``, ``"0"``, null: from the start."""
    if raw is None or raw == "":
        return 0
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 19:
        raw = int(raw)
    if isinstance(raw, int):
        return raw if 0 <= raw < MAX_MESSAGE_ID else None
    return None


def encode_json(event: dict[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


def error_event(error: ProtocolError) -> dict[str, Any]:
    return {"type": "error", "code": error.code.value, "detail": error.detail}


def render_text(event: dict[str, Any]) -> str | None:
    """The seed's plain-text rendering of a server event, on one line; ``None`` for events it
    never showed.

    A text-format client reads a line as one event, so a line break inside the text (or an
    id, a detail) would let a sender forge another user's line: each becomes a space.
    """
    rendered = _render_text(event)
    return None if rendered is None else LINE_BREAKS.sub(" ", rendered)


def _render_presence(event: dict[str, Any]) -> str:
    """The seed's sentences for one change; one summary sentence for a window of several."""
    change, online = event["event"], event["online"]
    if change == "joined":
        return f"{event['user']} joined. {online} users online."
    if change == "left":
        return f"{event['user']} left the chat"
    if change == "count":
        return f"{online} users online."
    parts = [f"{_names(event[side])} {side}" for side in ("joined", "left") if event[side]]
    return f"{'; '.join(parts)}. {online} users online."


def _names(users: list[str], shown: int = 3) -> str:
    if len(users) <= shown:
        return ", ".join(users)
    return f"{', '.join(users[:shown])} and {len(users) - shown} others"


def _render_text(event: dict[str, Any]) -> str | None:
    kind = event["type"]
    if kind == "message":
        return f"{event['from']}: {event['text']}"
    if kind == "direct":
        return f"{event['from']} (direct): {event['text']}"
    if kind == "presence":
        return _render_presence(event)
    if kind == "error":
        detail = str(event["detail"])
        if event["code"] == ErrorCode.RATE_LIMITED.value:
            return "Rate limit exceeded. Slow down."
        if event["code"] == ErrorCode.INVALID.value and not detail.startswith("Invalid message"):
            return f"Invalid message format: {detail}"
        return detail
    if kind == "reconnect":
        return f"Server restarting. Reconnect in {event['after_ms']} ms."
    if kind == "pong":
        return "pong"
    return None
