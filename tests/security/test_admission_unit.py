"""The handshake rules without a server: origins, token transport, room grants, settings, and
the credential filter on the server loggers."""

from __future__ import annotations

import logging
import time

import pytest

from gateway.admission import OriginPolicy, same_host
from gateway.auth import (
    Authenticator,
    Identity,
    TokenError,
    mint,
    parse_room_grants,
    token_from,
)
from gateway.logs import CredentialFilter, redact_credentials
from gateway.settings import SettingsError, canonical_origin, load_settings
from tests.security.helpers import SECRET, sign


@pytest.mark.parametrize(
    ("origin", "canonical"),
    [
        ("https://Chat.Example", "https://chat.example"),
        ("https://chat.example:443", "https://chat.example"),
        ("http://chat.example:80/", "http://chat.example"),
        ("http://chat.example:8080", "http://chat.example:8080"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("null", None),
        ("file://", None),
        ("ws://chat.example", None),
        ("https://chat.example/path", None),
        ("https://user@chat.example", None),
        ("https://chat.example:99999", None),
        ("https://chat.example?x=1", None),
    ],
)
def test_canonical_origin(origin: str, canonical: str | None) -> None:
    assert canonical_origin(origin) == canonical


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("https://chat.example", "chat.example", True),
        ("https://chat.example", "chat.example:443", True),
        ("http://chat.example", "CHAT.example", True),
        ("http://[::1]:8000", "[::1]:8000", True),
        ("http://chat.example", "chat.example:8000", False),
        ("http://chat.example.evil", "chat.example", False),
        ("http://chat.example", "chat.example:bad", False),
    ],
)
def test_same_host_compares_host_and_port(origin: str, host: str, same: bool) -> None:
    canonical = canonical_origin(origin)
    assert canonical is not None
    assert same_host(canonical, host) is same


def test_origin_policy() -> None:
    default = OriginPolicy((), allow_missing=True)
    assert default.allows(None, "h:1")
    assert default.allows("http://h:1", "h:1")
    assert not default.allows("http://h:1", None)
    assert not default.allows("http://h:2", "h:1")
    strict = OriginPolicy(("https://chat.example",), allow_missing=False)
    assert strict.allows("https://chat.example:443", "anything")
    assert not strict.allows(None, "chat.example")
    assert OriginPolicy(("*",), allow_missing=False).allows("http://x", "y")


def test_settings_refuse_bad_origins_and_short_secrets() -> None:
    with pytest.raises(SettingsError, match="GATEWAY_ALLOWED_ORIGINS"):
        load_settings(allowed_origins="https://ok.example, not an origin")
    with pytest.raises(SettingsError, match="GATEWAY_AUTH_SECRET") as refused:
        load_settings(auth_secret="tooshort-secret")
    assert "tooshort-secret" not in str(refused.value)
    with pytest.raises(SettingsError, match="GATEWAY_CONNECT_RATE_LIMIT"):
        load_settings(connect_rate_limit="fast")
    settings = load_settings(auth_secret=SECRET, api_key="k" * 20, connect_rate_limit="5/10")
    assert SECRET not in repr(settings)
    assert "k" * 20 not in repr(settings)
    assert settings.allow_no_origin
    assert (settings.connect_rate_limit.messages, settings.connect_rate_limit.window_seconds) == (
        5,
        10,
    )


@pytest.mark.parametrize(
    ("query", "subprotocols", "expected"),
    [
        ("q", [], ("q", False)),
        ("q", ["gateway.jwt", "s"], ("q", True)),
        (None, ["gateway.jwt", "s"], ("s", True)),
        (None, ["chat", "gateway.jwt", "s"], ("s", True)),
        (None, ["gateway.jwt"], (None, True)),
        (None, ["s", "gateway.jwt"], (None, True)),
        (None, ["other"], (None, False)),
        ("", [], (None, False)),
    ],
)
def test_token_from(
    query: str | None, subprotocols: list[str], expected: tuple[str | None, bool]
) -> None:
    assert token_from(query, subprotocols) == expected


def test_room_grants() -> None:
    identity = Identity("u", time.time() + 60, ("ops", "team-a.*"))
    assert identity.may_join("lobby")
    assert identity.may_join("ops")
    assert identity.may_join("team-a.x")
    assert not identity.may_join("ops2")
    assert not identity.may_join("team-b.x")
    assert Identity("u", 0).may_join("anything")
    assert Identity("u", 0, ()).may_join("lobby")
    assert parse_room_grants(["*"]) == ("*",)
    for bad in ("ops", [1], ["bad room"], ["-x*"], ["ok"] * 1001):
        assert parse_room_grants(bad) is None


def test_authenticator_round_trip_and_leeway() -> None:
    auth = Authenticator(SECRET, leeway=5)
    identity = auth.verify(mint(SECRET, "quinn", ttl=60, rooms=["ops"]))
    assert (identity.user, identity.rooms) == ("quinn", ("ops",))
    just_expired = sign({"sub": "quinn", "exp": int(time.time()) - 2})
    assert auth.verify(just_expired).user == "quinn"
    with pytest.raises(TokenError, match="token expired"):
        Authenticator(SECRET, leeway=0).verify(just_expired)
    assert SECRET not in repr(auth)


def test_credential_filter_scrubs_messages_and_arguments() -> None:
    jwt = mint(SECRET, "quinn")
    assert jwt not in redact_credentials(f"< sec-websocket-protocol: gateway.jwt, {jwt}")
    assert "s3cr3t" not in redact_credentials("< authorization: Bearer s3cr3t")
    assert "s3cr3t" not in redact_credentials("GET /ws/x?format=json&token=s3cr3t HTTP/1.1")
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s" %d',
        ("1.2.3.4", "GET", f"/?token={jwt}", 200),
        None,
    )
    assert CredentialFilter().filter(record)
    message = record.getMessage()
    assert jwt not in message
    assert message.endswith("200")
    assert record.args is not None
    assert len(record.args) == 4
