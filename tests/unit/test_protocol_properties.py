"""Properties of the codec under arbitrary and hostile input (hypothesis).

Whatever a client sends, parsing returns either a well-formed command or a spec'd error, never
an exception; valid commands survive an encode/parse round trip; what the server writes back
is always encodable as UTF-8 and parses back to the same event.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.protocol import (
    MAX_MESSAGE_ID,
    ROOM_PATTERN,
    USER_PATTERN,
    Codec,
    ErrorCode,
    Join,
    Leave,
    Ping,
    ProtocolError,
    Resume,
    SendDirect,
    SendMessage,
    WireFormat,
    encode_json,
    error_event,
    is_valid_room,
    is_valid_user,
    parse_message_id,
    render_text,
)

MAX_BYTES = 64
codec = Codec(max_message_bytes=MAX_BYTES)
SPEC_ERROR_CODES = {"rate_limited", "too_large", "invalid", "forbidden", "unknown_room"}
TYPES = ["message", "direct", "join", "leave", "resume", "ping"]
quick = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

rooms = st.from_regex(ROOM_PATTERN, fullmatch=True)
users = st.from_regex(USER_PATTERN, fullmatch=True)
texts = st.text(min_size=1, max_size=MAX_BYTES // 4).filter(lambda text: text.strip() != "")
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
"""Surrogates included: ``json.dumps`` escapes them, and JSON escapes can carry them."""
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children),
    max_leaves=12,
)
surrogate_escapes = st.integers(0xD800, 0xDFFF).map(lambda code: f"\\u{code:04x}")


def well_formed(result: object) -> bool:
    """The invariants the session relies on for every command the codec lets through."""
    if isinstance(result, ProtocolError):
        return result.code.value in SPEC_ERROR_CODES and isinstance(result.detail, str)
    if isinstance(result, SendMessage | SendDirect):
        target_ok = (
            is_valid_user(result.to)
            if isinstance(result, SendDirect)
            else (result.room is None or is_valid_room(result.room))
        )
        size = len(result.text.encode("utf-8"))  # raises on a lone surrogate
        return target_ok and result.text.strip() != "" and size <= MAX_BYTES
    if isinstance(result, Join | Leave):
        return is_valid_room(result.room)
    if isinstance(result, Resume):
        return is_valid_room(result.room) and 0 <= result.after < MAX_MESSAGE_ID
    return isinstance(result, Ping)


@quick
@given(frame=st.text(max_size=300), wire=st.sampled_from(WireFormat))
def test_any_text_frame_parses_to_a_command_or_a_spec_error(frame: str, wire: WireFormat) -> None:
    assert well_formed(codec.parse(frame, wire))


@quick
@given(value=json_values, wire=st.sampled_from(WireFormat))
def test_any_json_value_parses_to_a_command_or_a_spec_error(value: Any, wire: WireFormat) -> None:
    assert well_formed(codec.parse(json.dumps(value), wire))


@quick
@given(
    kind=st.sampled_from([*TYPES, "teleport", ""]) | json_scalars,
    fields=st.dictionaries(
        st.sampled_from(["room", "text", "to", "after", "extra"]), json_values, max_size=4
    ),
)
def test_commands_with_hostile_fields_never_escape_the_codec(
    kind: Any, fields: dict[str, Any]
) -> None:
    result = codec.parse(json.dumps({"type": kind, **fields}), WireFormat.JSON)
    assert well_formed(result)


@quick
@given(
    template=st.sampled_from(
        [
            '{"type":"message","text":"%s"}',
            '{"type":"direct","to":"%s","text":"x"}',
            '{"type":"join","room":"%s"}',
        ]
    ),
    escape=surrogate_escapes,
    prefix=st.text(alphabet="abc", max_size=3),
    suffix=st.text(alphabet="abc", max_size=3),
)
def test_lone_surrogates_from_json_escapes_are_invalid(
    template: str, escape: str, prefix: str, suffix: str
) -> None:
    """JSON can carry a lone surrogate that UTF-8 cannot: it must never reach the fan-out."""
    result = codec.parse(template % (prefix + escape + suffix), WireFormat.JSON)
    assert isinstance(result, ProtocolError)
    assert result.code is ErrorCode.INVALID


@quick
@given(
    valid=st.sampled_from(
        [
            '{"type":"message","room":"r","text":"hello"}',
            '{"type":"resume","room":"r","after":"12"}',
            '{"type":"direct","to":"bob","text":"psst"}',
        ]
    ),
    cut=st.integers(min_value=0, max_value=60),
    junk=st.text(max_size=5),
)
def test_truncated_and_spliced_json_never_raises(valid: str, cut: int, junk: str) -> None:
    assert well_formed(codec.parse(valid[:cut] + junk + valid[cut:], WireFormat.JSON))


@quick
@given(depth=st.integers(min_value=1, max_value=5000), opener=st.sampled_from(["[", '{"a":']))
def test_deep_nesting_is_an_error_not_a_crash(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    frame = "{" + '"type":' + opener * depth + "1" + closer * depth + "}"
    assert well_formed(codec.parse(frame, WireFormat.JSON))


@quick
@given(digits=st.integers(min_value=1, max_value=6000), sign=st.sampled_from(["", "-"]))
def test_huge_numbers_are_bounded(digits: int, sign: str) -> None:
    number = sign + "9" * digits
    for frame in (
        f'{{"type":"resume","room":"r","after":{number}}}',
        f'{{"type":"resume","room":"r","after":"{number}"}}',
        f'{{"type":"message","text":{number}}}',
        f'{{"type":"ping","x":{number}e999}}',
    ):
        assert well_formed(codec.parse(frame, WireFormat.JSON))


@quick
@given(raw=st.integers() | st.text(max_size=25) | st.floats() | st.booleans() | st.none())
def test_message_ids_are_none_or_in_range(raw: Any) -> None:
    parsed = parse_message_id(raw)
    assert parsed is None or 0 <= parsed < MAX_MESSAGE_ID


@quick
@given(room=rooms, text=texts, after=st.integers(min_value=0, max_value=MAX_MESSAGE_ID - 1))
def test_valid_room_commands_round_trip(room: str, text: str, after: int) -> None:
    cases = {
        json.dumps({"type": "message", "room": room, "text": text}): SendMessage(room, text),
        json.dumps({"type": "join", "room": room}): Join(room),
        json.dumps({"type": "leave", "room": room}): Leave(room),
        json.dumps({"type": "resume", "room": room, "after": str(after)}): Resume(room, after),
        json.dumps({"type": "resume", "room": room, "after": after}): Resume(room, after),
    }
    for frame, expected in cases.items():
        assert codec.parse(frame, WireFormat.JSON) == expected
    assert codec.parse(f"/join {room}", WireFormat.TEXT) == Join(room)
    assert codec.parse(f"/leave {room}", WireFormat.TEXT) == Leave(room)


@quick
@given(to=users, text=texts)
def test_valid_direct_messages_round_trip(to: str, text: str) -> None:
    frame = json.dumps({"type": "direct", "to": to, "text": text}, ensure_ascii=False)
    assert codec.parse(frame, WireFormat.JSON) == SendDirect(to, text)
    if " " not in to:
        assert codec.parse(f"/msg {to} {text}", WireFormat.TEXT) == SendDirect(to, text)


@quick
@given(text=texts.filter(lambda text: not text.lstrip().startswith(("{", "/"))))
def test_plain_text_is_a_message_to_the_current_room(text: str) -> None:
    for wire in WireFormat:
        assert codec.parse(text, wire) == SendMessage(None, text)


@quick
@given(room=st.text(max_size=80))
def test_room_names_are_short_ascii_identifiers(room: str) -> None:
    if is_valid_room(room):
        assert 1 <= len(room) <= 64
        assert room.isascii()
        assert room[0].isalnum()
        assert all(char.isalnum() or char in "_.:-" for char in room)


@quick
@given(user=users, text=texts, room=rooms, seq=st.integers(min_value=1, max_value=2**62))
def test_server_events_encode_to_utf8_and_back(user: str, text: str, room: str, seq: int) -> None:
    events: list[dict[str, Any]] = [
        {"type": "message", "id": str(seq), "room": room, "from": user, "text": text, "ts": 1.5},
        {"type": "direct", "from": user, "to": user, "text": text, "ts": 1.5},
        {"type": "presence", "room": room, "event": "joined", "user": user, "online": 3},
        {"type": "presence", "room": room, "event": "left", "user": user, "online": 2},
        error_event(ProtocolError(ErrorCode.INVALID, text)),
        error_event(ProtocolError(ErrorCode.RATE_LIMITED, "slow down")),
        {"type": "reconnect", "after_ms": seq},
        {"type": "pong"},
    ]
    for event in events:
        payload = encode_json(event)
        assert "\n" not in payload  # batches are newline-delimited
        assert json.loads(payload.encode("utf-8")) == event
        rendered = render_text(event)
        if rendered is not None:
            rendered.encode("utf-8")
