"""Spans of the message path, unit level: the hub over the memory broker, an in-memory exporter."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway import tracing
from gateway.broker import Envelope
from gateway.node import Node
from gateway.outbox import Outbox
from gateway.protocol import WireFormat
from gateway.session import Session
from gateway.settings import RateLimit, load_settings
from tests.support.fakes import FakeSink


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    yield exporter
    tracing.use_provider(None)
    provider.shutdown()


async def started_node() -> Node:
    node = Node(load_settings(rate_limit=RateLimit(0, 0), idle_timeout=0))
    await node.start()
    return node


async def attach(node: Node, user: str) -> Session:
    outbox = Outbox(FakeSink(), WireFormat.JSON, 100)
    session = node.new_session(user, WireFormat.JSON, outbox)
    assert await node.hub.attach(session, allow_duplicate=False) is None
    return session


def named(spans: Iterable[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


async def test_broadcast_span_is_a_child_of_the_publish_span(
    exporter: InMemorySpanExporter,
) -> None:
    node = await started_node()
    try:
        await attach(node, "alice")
        await attach(node, "bob")
        exporter.clear()
        envelope = await node.hub.publish_message("lobby", "alice", "hi")
        message_id = envelope.event["id"]
    finally:
        await node.aclose()

    spans = exporter.get_finished_spans()
    (publish,) = named(spans, "publish room:{room}")
    (broadcast,) = named(spans, "broadcast")
    assert publish.kind is SpanKind.PRODUCER
    assert broadcast.kind is SpanKind.CONSUMER
    assert dict(publish.attributes or {}) == {
        "messaging.system": "gateway",
        "messaging.destination.name": "lobby",
        "messaging.destination.template": "room:{room}",
        "messaging.operation.name": "publish",
        "messaging.operation.type": "send",
        "messaging.message.id": message_id,
    }
    attributes = dict(broadcast.attributes or {})
    assert attributes["messaging.destination.name"] == "lobby"
    assert attributes["gateway.recipients"] == 2
    assert attributes["messaging.message.id"] == message_id
    assert attributes["messaging.operation.type"] == "process"
    assert broadcast.context.trace_id == publish.context.trace_id
    assert broadcast.parent is not None
    assert broadcast.parent.span_id == publish.context.span_id


async def test_trace_context_survives_the_envelope_to_another_worker(
    exporter: InMemorySpanExporter,
) -> None:
    """What Redis does between workers: serialise the envelope, deliver it in another hub."""
    publisher, consumer = await started_node(), await started_node()
    try:
        await attach(consumer, "carol")
        envelope = Envelope("room:lobby", {"type": "message", "text": "x"}, 0.0)
        await tracing.publish(publisher.broker, envelope, keep=True)
        assert "traceparent" in envelope.trace
        exporter.clear()
        consumer.hub.deliver(Envelope.loads(envelope.dumps()))
    finally:
        await publisher.aclose()
        await consumer.aclose()

    (broadcast,) = named(exporter.get_finished_spans(), "broadcast")
    trace_id, span_id = (int(part, 16) for part in envelope.trace["traceparent"].split("-")[1:3])
    assert broadcast.context.trace_id == trace_id
    assert broadcast.parent is not None
    assert broadcast.parent.span_id == span_id
    assert broadcast.parent.is_remote
    assert dict(broadcast.attributes or {})["gateway.recipients"] == 1


async def test_websocket_messages_start_their_own_trace_linked_to_the_connection(
    exporter: InMemorySpanExporter,
) -> None:
    """A connection's span lasts hours: its messages must not all pile into its trace."""
    node = await started_node()
    connection_tracer = trace.get_tracer("test", tracer_provider=exporter_provider(exporter))

    async def connection() -> None:
        with connection_tracer.start_as_current_span("GET /ws/{client_id}") as ws_span:
            tracing.detach_connection_span()
            session = await attach(node, "dave")
            await session.on_text("hello")
            ws_context.append(ws_span.get_span_context())

    ws_context: list[trace.SpanContext] = []
    try:
        await asyncio.create_task(connection())
    finally:
        await node.aclose()
    publishes = named(exporter.get_finished_spans(), "publish room:{room}")
    assert len(publishes) == 2  # the presence event of the join, then the message
    for publish in publishes:
        assert publish.parent is None
        assert [link.context.span_id for link in publish.links] == [ws_context[0].span_id]


def exporter_provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


async def test_tracing_off_does_no_span_work_and_carries_no_context() -> None:
    tracing.use_provider(None)
    node = await started_node()
    try:
        await attach(node, "erin")
        envelope = await node.hub.publish_message("lobby", "erin", "quiet")
        assert envelope.trace == {}
        assert tracing.broadcast_span(node.broker, envelope, 1) is tracing.broadcast_span(
            node.broker, envelope, 2
        )
    finally:
        await node.aclose()


@pytest.mark.parametrize(
    ("env", "exporters", "protocol"),
    [
        ({}, (), "http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, ("otlp",), "http/protobuf"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            },
            ("otlp",),
            "grpc",
        ),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4318/v1/traces"},
            ("otlp",),
            "http/protobuf",
        ),
        ({"OTEL_TRACES_EXPORTER": "console,otlp"}, ("console", "otlp"), "http/protobuf"),
        (
            {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h"},
            (),
            "http/protobuf",
        ),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, (), "http/protobuf"),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
            },
            ("otlp",),
            "grpc",
        ),
    ],
)
def test_config_follows_the_standard_variables(
    env: dict[str, str], exporters: tuple[str, ...], protocol: str
) -> None:
    config = tracing.config_from_env(env)
    assert config.exporters == exporters
    assert config.protocol == protocol
    assert config.enabled == bool(exporters)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(tracing.TracingConfigError, match=variable):
        tracing.config_from_env(env)


_START = """
import json
from gateway import tracing
provider = tracing.start(tracing.config_from_env())
print(json.dumps({
    "sampler": provider.sampler.get_description(),
    "service": provider.resource.attributes["service.name"],
    "processors": [type(p).__name__ for p in provider._active_span_processor._span_processors],
    "exporters": [type(p.span_exporter).__name__ + ":" + type(p.span_exporter).__module__
                  for p in provider._active_span_processor._span_processors],
}))
"""


@pytest.mark.parametrize(
    ("env", "sampler", "service", "exporter"),
    [
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
            "ParentBased{root:AlwaysOnSampler",
            "gateway",
            "OTLPSpanExporter:opentelemetry.exporter.otlp.proto.http.trace_exporter",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_TRACES_SAMPLER": "traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "0.25",
                "OTEL_SERVICE_NAME": "chat-edge",
            },
            "TraceIdRatioBased{0.25}",
            "chat-edge",
            "OTLPSpanExporter:opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        ),
        (
            {
                "OTEL_TRACES_EXPORTER": "console",
                "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs",
            },
            "ParentBased{root:AlwaysOnSampler",
            "from-attrs",
            "ConsoleSpanExporter:opentelemetry.sdk.trace.export",
        ),
    ],
)
def test_the_sdk_built_in_a_worker_follows_the_environment(
    env: dict[str, str], sampler: str, service: str, exporter: str
) -> None:
    """In a fresh interpreter, as a worker builds it (the global provider is set once)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", _START],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    built = json.loads(done.stdout.strip().splitlines()[-1])
    assert built["sampler"].startswith(sampler)
    assert built["service"] == service
    assert built["processors"] == ["BatchSpanProcessor"]
    assert built["exporters"] == [exporter]
