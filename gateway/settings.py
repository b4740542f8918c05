"""Runtime settings, read once from ``GATEWAY_*`` variables and validated before anything starts.

A bad value must stop the start with a message naming the variable, so validation errors are
re-raised as :class:`SettingsError` whose text is one line per offending ``GATEWAY_`` name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "GATEWAY_"


class SettingsError(ValueError):
    """A setting has a value the gateway cannot run with."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``messages`` per ``window_seconds``; ``messages == 0`` turns limiting off."""

    messages: int
    window_seconds: int

    @property
    def enabled(self) -> bool:
        return self.messages > 0

    @classmethod
    def parse(cls, raw: str) -> RateLimit:
        text = raw.strip()
        if text == "0":
            return cls(0, 0)
        count, sep, window = text.partition("/")
        if not sep or not count.isdigit() or not window.isdigit():
            raise ValueError("expected '<messages>/<seconds>' such as 10/60, or 0 for off")
        if int(count) < 1 or int(window) < 1:
            raise ValueError("messages and seconds must both be at least 1")
        return cls(int(count), int(window))

    def __str__(self) -> str:
        return "0" if not self.enabled else f"{self.messages}/{self.window_seconds}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    broker_url: str = "memory://"
    heartbeat_interval: float = Field(20.0, gt=0)
    heartbeat_timeout: float = Field(20.0, gt=0)
    idle_timeout: float = Field(300.0, ge=0)
    rate_limit: Annotated[RateLimit, NoDecode] = RateLimit(10, 60)
    rate_limit_strikes: int = Field(5, ge=1)
    max_message_bytes: int = Field(1000, ge=1)
    max_frame_bytes: int = Field(65536, ge=125)
    send_queue: int = Field(1000, ge=1)
    drain_timeout: float = Field(25.0, gt=0)
    auth_secret: str = ""
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = ()
    history_size: int = Field(100, ge=0)
    api_key: str = ""
    max_rooms_per_connection: int = Field(32, ge=1)
    log_level: str = "info"

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _parse_rate_limit(cls, value: object) -> RateLimit:
        if isinstance(value, RateLimit):
            return value
        return RateLimit.parse(str(value))

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> tuple[str, ...]:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, (list, tuple)):
            return tuple(str(part) for part in value)
        raise ValueError("expected a comma-separated list of origins")

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in {"memory", "redis", "rediss"}:
            raise ValueError("expected memory:// or redis://host:port/db")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error", "critical"}:
            raise ValueError("expected debug, info, warning, error or critical")
        return value.lower()

    @property
    def uses_shared_broker(self) -> bool:
        return not self.broker_url.startswith("memory:")


def load_settings(**overrides: object) -> Settings:
    """Read the environment (plus explicit overrides) or raise a :class:`SettingsError`."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            field = str(problem["loc"][0]) if problem["loc"] else "?"
            message = str(problem["msg"]).removeprefix("Value error, ")
            lines.append(f"{ENV_PREFIX}{field.upper()}: {message}")
        raise SettingsError("; ".join(lines)) from None
