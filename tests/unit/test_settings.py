from __future__ import annotations

import pytest

from gateway.settings import RateLimit, SettingsError, load_settings


def test_defaults_match_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GATEWAY_PORT", "GATEWAY_HOST", "GATEWAY_RATE_LIMIT", "GATEWAY_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert (settings.host, settings.port) == ("0.0.0.0", 8000)
    assert settings.broker_url == "memory://"
    assert settings.rate_limit == RateLimit(10, 60)
    assert settings.max_message_bytes == 1000
    assert settings.max_frame_bytes == 65536
    assert settings.send_queue == 1000
    assert settings.idle_timeout == 300
    assert settings.history_size == 100


def test_rate_limit_off_and_custom(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_RATE_LIMIT", "0")
    assert not load_settings().rate_limit.enabled
    monkeypatch.setenv("GATEWAY_RATE_LIMIT", "5/2")
    assert load_settings().rate_limit == RateLimit(5, 2)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GATEWAY_PORT", "eighty"),
        ("GATEWAY_PORT", "70000"),
        ("GATEWAY_RATE_LIMIT", "ten"),
        ("GATEWAY_RATE_LIMIT", "0/60"),
        ("GATEWAY_BROKER_URL", "kafka://x"),
        ("GATEWAY_SEND_QUEUE", "0"),
        ("GATEWAY_HEARTBEAT_INTERVAL", "-1"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_allowed_origins_is_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_ALLOWED_ORIGINS", "https://a.example, https://b.example")
    assert load_settings().allowed_origins == ("https://a.example", "https://b.example")
