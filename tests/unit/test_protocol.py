from __future__ import annotations

import pytest

from gateway.protocol import (
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
    parse_message_id,
    render_text,
)

codec = Codec(max_message_bytes=20)
JSON, TEXT = WireFormat.JSON, WireFormat.TEXT


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ('{"type":"message","room":"r1","text":"hi"}', SendMessage("r1", "hi")),
        ('{"type":"message","text":"hi"}', SendMessage(None, "hi")),
        ('{"type":"direct","to":"bob","text":"psst"}', SendDirect("bob", "psst")),
        ('{"type":"join","room":"games"}', Join("games")),
        ('{"type":"leave","room":"games"}', Leave("games")),
        ('{"type":"resume","room":"games","after":"41"}', Resume("games", 41)),
        ('{"type":"resume","room":"games","after":null}', Resume("games", 0)),
        ('{"type":"ping"}', Ping()),
        ("plain text", SendMessage(None, "plain text")),
    ],
)
def test_json_commands(frame: str, expected: object) -> None:
    assert codec.parse(frame, JSON) == expected


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", ErrorCode.INVALID),
        ("{}", ErrorCode.INVALID),
        ('{"type":"shout","text":"x"}', ErrorCode.INVALID),
        ('{"type":"message","text":"   "}', ErrorCode.INVALID),
        ('{"type":"message","text":42}', ErrorCode.INVALID),
        ('{"type":"message","room":"bad room!","text":"x"}', ErrorCode.INVALID),
        ('{"type":"join","room":""}', ErrorCode.INVALID),
        ('{"type":"join","room":"' + "r" * 65 + '"}', ErrorCode.INVALID),
        ('{"type":"resume","room":"r","after":"-1"}', ErrorCode.INVALID),
        ('{"type":"resume","room":"r","after":true}', ErrorCode.INVALID),
        ('{"type":"direct","to":"","text":"x"}', ErrorCode.INVALID),
        ('{"type":"message","text":"' + "x" * 21 + '"}', ErrorCode.TOO_LARGE),
        ("é" * 11, ErrorCode.TOO_LARGE),
        ("", ErrorCode.INVALID),
        ("[" * 100_000, ErrorCode.TOO_LARGE),
    ],
)
def test_bad_frames_map_to_spec_errors(frame: str, code: ErrorCode) -> None:
    result = codec.parse(frame, JSON)
    assert isinstance(result, ProtocolError)
    assert result.code is code


def test_deeply_nested_json_is_invalid_not_a_crash() -> None:
    wide = Codec(max_message_bytes=100_000)
    result = wide.parse('{"a":' * 5000 + "1" + "}" * 5000, JSON)
    assert isinstance(result, ProtocolError)


def test_text_format_treats_json_looking_frames_as_chat() -> None:
    assert codec.parse('{"type":"ping"}', TEXT) == SendMessage(None, '{"type":"ping"}')


def test_text_format_slash_commands() -> None:
    assert codec.parse("/join games", TEXT) == Join("games")
    assert codec.parse("/msg bob hi there", TEXT) == SendDirect("bob", "hi there")
    assert codec.parse("/shrug", TEXT) == SendMessage(None, "/shrug")
    assert isinstance(codec.parse("/msg", TEXT), ProtocolError)


def test_message_ids() -> None:
    assert parse_message_id("17") == 17
    assert parse_message_id(None) == 0
    assert parse_message_id("x1") is None
    assert parse_message_id("9" * 30) is None


def test_seed_text_rendering() -> None:
    assert render_text({"type": "message", "from": "alice", "text": "hi"}) == "alice: hi"
    joined = {"type": "presence", "event": "joined", "user": "bob", "online": 3}
    assert render_text(joined) == "bob joined. 3 users online."
    assert render_text({**joined, "event": "left"}) == "bob left the chat"
    limited = {"type": "error", "code": "rate_limited", "detail": "x"}
    assert render_text(limited) == "Rate limit exceeded. Slow down."
    invalid = {"type": "error", "code": "invalid", "detail": "empty"}
    assert render_text(invalid) == "Invalid message format: empty"
    assert render_text({"type": "joined", "room": "lobby", "online": []}) is None
