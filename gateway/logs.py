"""Structured logs: one JSON object per line for machines, a readable line in a terminal.

Named ``logs`` rather than ``logging`` so no tool resolves ``import logging`` to this module.
Every record carries the worker pid, the connection and user of the connection task that
logged it (bound once per connection, see :func:`bind_connection`), and the trace and span ids
of the current span. Chat text is never written above ``debug``: a field named ``text`` is
dropped from records at higher levels, and WebSocket tokens in logged URLs are redacted.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

FORMATS = ("auto", "json", "text")

_connection_id: ContextVar[str | None] = ContextVar("gateway_connection_id", default=None)
_user: ContextVar[str | None] = ContextVar("gateway_user", default=None)

_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName", "color_message"}
)
_SECRET = re.compile(r"((?:token|access_token|api_key)=)[^&\s\"']+", re.IGNORECASE)
_PRIVATE_BELOW_DEBUG = frozenset({"text"})


def bind_connection(connection_id: str, user: str) -> None:
    """Tag every record of the current task (and tasks it starts) with the connection."""
    _connection_id.set(connection_id)
    _user.set(user)


def redact(message: str) -> str:
    """Tokens, JWTs and credential headers out of a log line (see :func:`redact_credentials`)."""
    return redact_credentials(_SECRET.sub(r"\1[redacted]", message))


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured content of a record, in the order a reader wants it."""
    fields: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6]
        + "Z",
        "level": record.levelname.lower(),
        "event": redact(record.getMessage()),
        "logger": record.name,
        "pid": record.process,
    }
    connection_id, user = _connection_id.get(), _user.get()
    if connection_id is not None:
        fields["connection_id"] = connection_id
    if user is not None:
        fields["user"] = user
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        fields["trace_id"] = format(span_context.trace_id, "032x")
        fields["span_id"] = format(span_context.span_id, "016x")
    debug = record.levelno <= logging.DEBUG
    for key, value in record.__dict__.items():
        if key in _STANDARD or key.startswith("_"):
            continue
        if key in _PRIVATE_BELOW_DEBUG and not debug:
            continue
        fields[key] = value
    if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
        _client, method, path, _version, status = record.args
        fields.update(method=method, path=redact(str(path)), status=status)
    if record.exc_info:
        fields["exc"] = logging.Formatter().formatException(record.exc_info)
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(record_fields(record), ensure_ascii=False, default=str)


class ConsoleFormatter(logging.Formatter):
    """For a person at a terminal: time, level, logger, event, then ``key=value`` pairs."""

    def format(self, record: logging.LogRecord) -> str:
        fields = record_fields(record)
        head = (
            f"{fields.pop('ts')[11:23]} {fields.pop('level').upper():<7} "
            f"{fields.pop('logger')}: {fields.pop('event')}"
        )
        exc = fields.pop("exc", None)
        fields.pop("pid")
        tail = " ".join(f"{key}={_console_value(value)}" for key, value in fields.items())
        line = f"{head}  {tail}" if tail else head
        return f"{line}\n{exc}" if exc else line


def _console_value(value: object) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if not text or " " in text else text


def formatter(style: str = "auto") -> logging.Formatter:
    """JSON unless ``style`` asks for text, or is ``auto`` and stderr is a terminal."""
    if style == "text" or (style == "auto" and sys.stderr.isatty()):
        return ConsoleFormatter()
    return JsonFormatter()


def logging_config(level: str = "info", style: str = "auto") -> dict[str, Any]:
    """A ``dictConfig`` routing the gateway's, uvicorn's and gunicorn's loggers to stderr.

    gunicorn takes it as ``logconfig_dict``; the uvicorn worker then hands gunicorn's handlers
    to uvicorn's loggers, so one formatter serves all of them.
    """
    level = level.upper()
    routed = {"handlers": ["stderr"], "level": level, "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"gateway": {"()": "gateway.logs.formatter", "style": style}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "gateway",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            name: dict(routed)
            for name in (
                "gunicorn.error",
                "gunicorn.access",
                "uvicorn",
                "uvicorn.error",
                "uvicorn.access",
            )
        },
    }


def configure(level: str = "info", style: str = "auto") -> None:
    logging.config.dictConfig(logging_config(level, style))


_CREDENTIALS = (
    (re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*"), "[redacted-jwt]"),
    (re.compile(r"(?i)((?:^|[?&\s])(?:access_)?token=)[^&\s\"']+"), r"\1[redacted]"),
    (re.compile(r"(?i)((?:proxy-)?authorization:|cookie:)[^\n]*"), r"\1 [redacted]"),
)
CREDENTIAL_LOGGERS = ("uvicorn.error", "uvicorn.access", "gunicorn.error", "gunicorn.access")
"""Loggers of the servers, which write request lines and, at debug level, every handshake
header (``Sec-WebSocket-Protocol`` carries the token, ``Authorization`` the API key)."""


def redact_credentials(text: str) -> str:
    for pattern, replacement in _CREDENTIALS:
        text = pattern.sub(replacement, text)
    return text


class CredentialFilter(logging.Filter):
    """Scrubs tokens and credential headers from a record before any handler formats it, so no
    log configuration (ours, gunicorn's, an operator's) can write one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_credentials(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_scrub(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _scrub(value) for key, value in record.args.items()}
        return True


def _scrub(value: object) -> object:
    if isinstance(value, int | float | bool) or value is None:
        return value
    text = str(value)
    redacted = redact_credentials(text)
    return value if redacted == text else redacted


def install_log_redaction() -> None:
    """Attach :class:`CredentialFilter` to the server loggers (idempotent)."""
    for name in CREDENTIAL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, CredentialFilter) for existing in logger.filters):
            logger.addFilter(CredentialFilter())
