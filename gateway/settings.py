"""Runtime settings, read once from ``GATEWAY_*`` variables and validated before anything starts.

A bad value must stop the start with a message naming the variable, so validation errors are
re-raised as :class:`SettingsError` whose text is one line per offending ``GATEWAY_`` name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gateway.broker.urls import parse as parse_broker_url

ENV_PREFIX = "GATEWAY_"
HOOK_EVENTS = ("connect", "join", "message")


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
    broker_min_replicas: int = Field(0, ge=0, le=100)
    """Replicas that must hold a kept message (Redis ``WAIT``) before it is acknowledged and
    fanned out; 0 = acknowledge once the primary has it. Redis brokers only."""
    heartbeat_interval: float = Field(20.0, gt=0)
    heartbeat_timeout: float = Field(20.0, gt=0)
    idle_timeout: float = Field(300.0, ge=0)
    rate_limit: Annotated[RateLimit, NoDecode] = RateLimit(10, 60)
    rate_limit_strikes: int = Field(5, ge=1)
    max_message_bytes: int = Field(1000, ge=1)
    max_frame_bytes: int = Field(65536, ge=125)
    send_queue: int = Field(1000, ge=1)
    socket_send_buffer: int = Field(0, ge=0)
    drain_timeout: float = Field(25.0, gt=0)
    drain_jitter: float = Field(5.0, ge=0)
    """Window (seconds) over which a drain spreads clients' return: each ``reconnect`` carries an
    ``after_ms`` drawn uniformly from it, so a deploy is not a reconnect storm."""
    auth_secret: str = Field("", repr=False)
    auth_leeway: float = Field(5.0, ge=0, le=300)
    """Clock skew (seconds) tolerated on a token's ``exp`` and ``nbf``."""
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = ()
    allow_no_origin: bool = True
    """Admit handshakes without an ``Origin`` header (non-browser clients; browsers always send
    one, so this does not weaken the cross-site check)."""
    history_size: int = Field(100, ge=0)
    presence_ttl: float = Field(15.0, ge=0.5)
    """Seconds a presence entry outlives its last refresh (every third of it): how long a
    crashed worker's users still appear online. Redis broker only."""
    presence_batch_ms: int = Field(250, ge=0, le=60_000)
    """Presence changes of a room within this window reach each member as one event (the
    first at once); 0 sends every change as it comes (:mod:`gateway.presence_batch`)."""
    presence_names_max: int = Field(1000, ge=0)
    """Above this many members a room's presence events and ``joined`` lists stop naming users."""
    workers: int = Field(0, ge=0)
    """gunicorn workers; 0 = one per CPU with a shared broker, else 1."""
    api_key: str = Field("", repr=False)
    api_docs: bool = False
    """Serve ``/docs``, ``/redoc`` and ``/openapi.json`` (off: the API shape is not advertised)."""
    max_rooms_per_connection: int = Field(32, ge=1)
    max_connections: int = Field(50_000, ge=0)
    """Connections per worker (0 = no limit); beyond it a connection is closed with 1013."""
    handshake_timeout: float = Field(10.0, gt=0)
    """Seconds a TCP connection has to complete its HTTP request or WebSocket upgrade."""
    max_connections_per_user: int = Field(10, ge=0)
    """Connections of one authenticated user, over all workers (0 = no limit)."""
    connect_rate_limit: Annotated[RateLimit, NoDecode] = RateLimit(0, 0)
    """WebSocket handshakes per window per client IP and worker, e.g. ``20/10``; ``0`` = off."""
    command_rate_limit: Annotated[RateLimit, NoDecode] = RateLimit(30, 10)
    """``join``, ``leave``, ``resume`` and ``ping`` commands per window per connection: each
    join or leave is a presence event to every member of the room, so one client could
    otherwise make a room's members do its work. ``0`` = off."""
    hook_url: str = ""
    """Base URL of the app backend asked by :mod:`gateway.hooks`; empty = no hooks."""
    hook_secret: str = Field("", repr=False, validate_default=True)
    hook_events: Annotated[tuple[str, ...], NoDecode] = HOOK_EVENTS
    hook_timeout: float = Field(2.0, gt=0, le=60)
    hook_failure: str = "closed"
    """``closed``: a backend that fails refuses; ``open``: it allows."""
    idempotency_ttl: int = Field(300, ge=1, le=7 * 24 * 3600)
    """Seconds an ``Idempotency-Key`` of the publish API is remembered (in the broker)."""
    log_level: str = "info"
    log_format: str = "auto"

    @field_validator("hook_url")
    @classmethod
    def _check_hook_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and (
            urlsplit(value).scheme not in {"http", "https"} or not urlsplit(value).netloc
        ):
            raise ValueError("expected an http:// or https:// base URL, or empty for no hooks")
        return value

    @field_validator("hook_secret")
    @classmethod
    def _check_hook_secret(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("hook_url") and len(value.encode()) < 32:
            raise ValueError("at least 32 bytes are required when GATEWAY_HOOK_URL is set")
        return value

    @field_validator("hook_events", mode="before")
    @classmethod
    def _split_hook_events(cls, value: object) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [part.strip().lower() for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError("expected a comma list of connect, join, message")
        unknown = [str(part) for part in value if part not in HOOK_EVENTS]
        if unknown:
            raise ValueError(f"unknown hook event {unknown[0]!r}: use connect, join, message")
        return tuple(dict.fromkeys(str(part) for part in value))

    @field_validator("hook_failure")
    @classmethod
    def _check_hook_failure(cls, value: str) -> str:
        if value.strip().lower() not in {"closed", "open"}:
            raise ValueError("expected closed (a failing backend refuses) or open (it allows)")
        return value.strip().lower()

    @field_validator("rate_limit", "connect_rate_limit", "command_rate_limit", mode="before")
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

    @field_validator("allowed_origins")
    @classmethod
    def _normalize_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        normalized = []
        for origin in value:
            canonical = "*" if origin == "*" else canonical_origin(origin)
            if canonical is None:
                raise ValueError(f"{origin!r} is not an origin such as https://chat.example:8443")
            normalized.append(canonical)
        return tuple(normalized)

    @field_validator("auth_secret")
    @classmethod
    def _check_auth_secret(cls, value: str) -> str:
        if value and len(value.encode()) < 32:
            raise ValueError("an HS256 secret must be at least 32 bytes (RFC 7518 section 3.2)")
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str) -> str:
        parse_broker_url(value)
        return value

    @field_validator("broker_min_replicas")
    @classmethod
    def _check_min_replicas(cls, value: int, info: ValidationInfo) -> int:
        url = str(info.data.get("broker_url", "memory://"))
        if value and url.startswith("memory:"):
            raise ValueError("needs a Redis GATEWAY_BROKER_URL (replicas are Redis replicas)")
        if value and url.startswith("redis+cluster:"):
            raise ValueError("not supported with redis+cluster:// (WAIT covers one shard)")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error", "critical"}:
            raise ValueError("expected debug, info, warning, error or critical")
        return value.lower()

    @field_validator("log_format")
    @classmethod
    def _check_log_format(cls, value: str) -> str:
        if value.lower() not in {"auto", "json", "text"}:
            raise ValueError("expected auto (JSON unless stderr is a terminal), json or text")
        return value.lower()

    @property
    def uses_shared_broker(self) -> bool:
        return not self.broker_url.startswith("memory:")


DEFAULT_PORTS = {"http": 80, "https": 443}


def canonical_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port; ``None``: not an origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in DEFAULT_PORTS or not host or parts.path not in ("", "/"):
        return None
    if parts.query or parts.fragment or parts.username is not None:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


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
