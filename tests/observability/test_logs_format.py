"""The log line format: one JSON object per record, ids where known, no chat text above debug."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import logging.config
import os
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from gateway import logs


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("gateway.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream, handler
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_a_record_is_one_json_line_with_the_base_fields(
    capture: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, stream, _ = capture
    logger.info("connection closed\nsecond line", extra={"reason": "client", "code": 1000})
    (record,) = lines(stream)
    assert record["level"] == "info"
    assert record["event"] == "connection closed\nsecond line"
    assert record["logger"] == "gateway.test-logs"
    assert record["pid"] == os.getpid()
    assert record["reason"] == "client"
    assert record["code"] == 1000
    assert str(record["ts"]).endswith("Z")
    assert "trace_id" not in record
    assert "connection_id" not in record


def test_connection_ids_are_bound_per_task(
    capture: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, stream, _ = capture

    async def connection(connection_id: str, user: str) -> None:
        logs.bind_connection(connection_id, user)
        await asyncio.sleep(0)
        logger.info("connection opened")

    async def both() -> None:
        await asyncio.gather(connection("c-1", "alice"), connection("c-2", "bob"))
        logger.info("outside any connection")

    asyncio.run(both())
    records = lines(stream)
    assert {(r["connection_id"], r["user"]) for r in records[:2]} == {
        ("c-1", "alice"),
        ("c-2", "bob"),
    }
    assert "connection_id" not in records[2]


def test_trace_and_span_ids_of_the_current_span(
    capture: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, stream, _ = capture
    provider = TracerProvider()
    with provider.get_tracer("test").start_as_current_span("broadcast") as span:
        logger.warning("inside")
    provider.shutdown()
    (record,) = lines(stream)
    assert record["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert record["span_id"] == format(span.get_span_context().span_id, "016x")


def test_message_text_only_at_debug(
    capture: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, stream, _ = capture
    for level in (logging.INFO, logging.WARNING, logging.ERROR):
        logger.log(level, "message rejected", extra={"text": "secret words", "code": "too_large"})
    logger.debug("message rejected", extra={"text": "secret words"})
    records = lines(stream)
    assert [("text" in record) for record in records] == [False, False, False, True]
    assert all(record.get("code") == "too_large" for record in records[:3])


def test_tokens_in_urls_are_redacted(
    capture: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, stream, _ = capture
    logger.info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5", "/ws/a?format=json&token=ey.J.x")
    (record,) = lines(stream)
    assert "ey.J.x" not in str(record["event"])
    assert "token=[redacted]" in str(record["event"])
    assert "format=json" in str(record["event"])


def test_exceptions_stay_inside_the_one_line(
    capture: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, stream, _ = capture
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("connection failed")
    (record,) = lines(stream)
    assert "RuntimeError: boom" in str(record["exc"])


def test_console_format_for_terminals() -> None:
    record = logging.LogRecord("gateway.server.transport", logging.INFO, "", 0, "opened", (), None)
    record.reason = "client"
    record.detail = "client closed"
    line = logs.ConsoleFormatter().format(record)
    assert 'detail="client closed"' in line
    assert "INFO" in line
    assert "gateway.server.transport: opened" in line
    assert "reason=client" in line
    assert not line.startswith("{")
    assert isinstance(logs.formatter("json"), logs.JsonFormatter)
    assert isinstance(logs.formatter("text"), logs.ConsoleFormatter)


def test_the_dict_config_routes_server_loggers_through_the_formatter() -> None:
    config = logs.logging_config("warning", "json")
    for name in ("gunicorn.error", "gunicorn.access", "uvicorn.error", "uvicorn.access"):
        assert config["loggers"][name]["handlers"] == ["stderr"]
        assert config["loggers"][name]["propagate"] is False
    assert config["root"]["level"] == "WARNING"
    built = logging.config.BaseConfigurator(config).resolve(config["formatters"]["gateway"]["()"])
    assert isinstance(built(style="json"), logs.JsonFormatter)
