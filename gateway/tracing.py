"""OpenTelemetry for the gateway: set up from the standard ``OTEL_*`` variables, after fork.

With no exporter configured the SDK is never built: :func:`tracer` is ``None`` and the hub's
publish and broadcast paths skip span work entirely (one global read), which is what keeps
tracing free when it is off. With an exporter, each worker builds its own provider in the app
lifespan (never in the gunicorn master: exporter threads and gRPC channels do not survive a fork).

Trace context crosses workers inside the broker :class:`~gateway.broker.Envelope`, following
the OTel messaging conventions: a ``PRODUCER`` span at publish injects its context into
``envelope.trace``; every worker that fans the publication out opens a ``CONSUMER`` span named
``broadcast`` as its child.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import Link, SpanKind, Tracer

from gateway import __version__
from gateway.broker import Broker, Envelope, room_channel, room_of, user_channel
from gateway.logs import redact

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.util.http import ExcludeList

SYSTEM = "messaging.system"
DESTINATION = "messaging.destination.name"
TEMPLATE = "messaging.destination.template"
MESSAGE_ID = "messaging.message.id"
OPERATION = "messaging.operation.name"
OPERATION_TYPE = "messaging.operation.type"
RECIPIENTS = "gateway.recipients"
PROTOCOLS = ("http/protobuf", "grpc")


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable has a value the gateway cannot use (message names it)."""


@dataclass(frozen=True, slots=True)
class TracingConfig:
    exporters: tuple[str, ...]
    """``otlp`` and/or ``console``; empty = tracing off."""
    protocol: str = "http/protobuf"

    @property
    def enabled(self) -> bool:
        return bool(self.exporters)


def config_from_env(environ: Mapping[str, str] | None = None) -> TracingConfig:
    """Decide what to export from the standard variables, without building anything.

    ``OTEL_TRACES_EXPORTER`` unset means ``otlp`` only when an OTLP endpoint is set: the SDK's
    own default (always ``otlp`` to localhost) would make every laptop run pay for an exporter
    that has nowhere to send.
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return TracingConfig(())
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if raw:
        names = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    elif env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        names = ("otlp",)
    else:
        names = ()
    names = tuple(name for name in names if name != "none")
    unknown = [name for name in names if name not in ("otlp", "console")]
    if unknown:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER: unsupported exporter {unknown[0]!r} (use otlp, console, none)"
        )
    variable = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
    protocol = env.get(variable, "").strip()
    if not protocol:
        variable = "OTEL_EXPORTER_OTLP_PROTOCOL"
        protocol = env.get(variable, "").strip() or "http/protobuf"
    if "otlp" in names and protocol not in PROTOCOLS:
        raise TracingConfigError(f"{variable}: expected http/protobuf or grpc, got {protocol!r}")
    return TracingConfig(names, protocol)


_tracer: Tracer | None = None
_provider: TracerProvider | None = None
_provider_pid = 0


def tracer() -> Tracer | None:
    """The gateway's tracer, or ``None`` when tracing is off (callers then skip span work)."""
    return _tracer


def use_provider(provider: TracerProvider | None) -> None:
    """Trace gateway spans through ``provider`` (``None`` turns them off); tests use this."""
    global _tracer
    _tracer = provider.get_tracer("gateway", __version__) if provider is not None else None


def start(config: TracingConfig) -> TracerProvider | None:
    """Build the SDK for this process (once; called from the app lifespan, after fork)."""
    global _provider, _provider_pid
    if not config.enabled:
        return None
    if _provider is not None and _provider_pid == os.getpid():
        use_provider(_provider)
        return _provider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(
        {
            "service.version": __version__,
            "service.instance.id": f"{os.uname().nodename}-{os.getpid()}",
            "process.pid": os.getpid(),
        }
    )
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "gateway"}))
    provider = TracerProvider(resource=resource)
    for exporter in _exporters(config):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if _provider is None:
        trace.set_tracer_provider(provider)
    _provider, _provider_pid = provider, os.getpid()
    use_provider(provider)
    return provider


def _exporters(config: TracingConfig) -> Iterator[SpanExporter]:
    for name in config.exporters:
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            yield ConsoleSpanExporter()
        elif config.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )

            yield GrpcExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpExporter,
            )

            yield HttpExporter()


def flush(timeout_seconds: float = 5.0) -> None:
    """Export what is buffered (lifespan end: the worker may be killed right after)."""
    if _provider is not None and _provider_pid == os.getpid():
        _provider.force_flush(int(timeout_seconds * 1000))


def excluded_urls() -> str:
    return os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "/healthz,/readyz,/metrics")


@functools.cache
def _excluded_url_list() -> ExcludeList | None:
    """Parsed once per process, as the instrumentation does, not once per connection."""
    from opentelemetry.util.http import parse_excluded_urls

    return parse_excluded_urls(excluded_urls())


def connection_span(scope: MutableMapping[str, Any], route: str) -> AbstractContextManager[Any]:
    """The ``SERVER`` span of a chat WebSocket, for the connection's life.

    The chat WebSockets bypass FastAPI (see :mod:`gateway.server.app`), so its instrumentation does
    not see them; this is the span it would have opened: ``HTTP <route>``, the request's
    attributes with the token scrubbed from the URL, a child of an incoming ``traceparent``,
    skipped for URLs in ``OTEL_PYTHON_FASTAPI_EXCLUDED_URLS``. Its messages link to it
    (:func:`detach_connection_span`).
    """
    active = _tracer
    if active is None:
        return _NO_SPAN
    from opentelemetry.instrumentation.asgi import (
        asgi_getter,
        collect_request_attributes,
        get_host_port_url_tuple,
    )

    _, _, url = get_host_port_url_tuple(scope)  # type: ignore[no-untyped-call]
    excluded = _excluded_url_list()
    if excluded is not None and excluded.url_disabled(url):
        return _NO_SPAN
    attributes: dict[str, Any] = collect_request_attributes(scope)  # type: ignore[no-untyped-call]
    attributes["http.route"] = route
    attributes.update(_redacted_urls(attributes))
    return active.start_as_current_span(
        f"HTTP {route}",  # the instrumentation's name: a WebSocket has no method, "HTTP" it is
        context=extract(cast(dict[str, Any], scope), getter=asgi_getter),  # a dict in practice
        kind=SpanKind.SERVER,
        attributes=attributes,
    )


_URL_ATTRIBUTES = ("http.url", "http.target", "url.full", "url.query")


def scrub_token(span: Any, scope: dict[str, Any]) -> None:
    """A WebSocket token may ride in the query string: keep it out of the span's URL."""
    if b"token=" not in scope.get("query_string", b"") or not span.is_recording():
        return
    span.set_attributes(_redacted_urls(getattr(span, "attributes", None) or {}))


def _redacted_urls(attributes: Mapping[str, Any]) -> dict[str, str]:
    """The URL-bearing attributes present, with any token redacted."""
    return {
        key: redact(value)
        for key in _URL_ATTRIBUTES
        if isinstance(value := attributes.get(key), str)
    }


# Spans on the message path


def detach_connection_span() -> None:
    """Let a WebSocket's messages start their own traces, linked to the connection's span.

    A WebSocket's span (:func:`connection_span`) lasts as long as the connection (hours), so
    parenting every chat message under it would make one unbounded trace per connection.
    Called at the start of the connection task, whose context dies with it.
    """
    if _tracer is None:
        return
    span_context = trace.get_current_span().get_span_context()
    ctx = otel_context.set_value(CONNECTION_KEY, span_context, otel_context.Context())
    otel_context.attach(ctx)


CONNECTION_KEY = "gateway.connection_span"


def system_of(broker: Broker) -> str:
    return "redis" if type(broker).__name__.lower().startswith("redis") else "gateway"


async def publish(broker: Broker, envelope: Envelope, *, keep: bool) -> Envelope:
    """``broker.publish`` inside a ``PRODUCER`` span whose context travels in the envelope."""
    active = _tracer
    if active is None:
        return await broker.publish(envelope, keep=keep)
    destination, template = _destination(envelope.channel)
    links = []
    connection = otel_context.get_value(CONNECTION_KEY)
    if isinstance(connection, trace.SpanContext) and connection.is_valid:
        links.append(Link(connection))
    with active.start_as_current_span(
        f"publish {template}",
        kind=SpanKind.PRODUCER,
        links=links,
        attributes={
            SYSTEM: system_of(broker),
            DESTINATION: destination,
            TEMPLATE: template,
            OPERATION: "publish",
            OPERATION_TYPE: "send",
        },
    ) as span:
        inject(envelope.trace)
        published = await broker.publish(envelope, keep=keep)
        if published.seq:
            span.set_attribute(MESSAGE_ID, str(published.seq))
        return published


def broadcast_span(
    broker: Broker, envelope: Envelope, recipients: int
) -> AbstractContextManager[Any]:
    """The ``broadcast`` span of one local fan-out: a child of the publisher's span."""
    active = _tracer
    if active is None:
        return _NO_SPAN
    destination, template = _destination(envelope.channel)
    attributes: dict[str, str | int] = {
        SYSTEM: system_of(broker),
        DESTINATION: destination,
        TEMPLATE: template,
        OPERATION: "broadcast",
        OPERATION_TYPE: "process",
        RECIPIENTS: recipients,
    }
    if envelope.seq:
        attributes[MESSAGE_ID] = str(envelope.seq)
    parent = extract(envelope.trace) if envelope.trace else None
    return active.start_as_current_span(
        "broadcast", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
    )


_NO_SPAN = contextlib.nullcontext(None)


def _destination(channel: str) -> tuple[str, str]:
    """(name, template): rooms are named by the room (SPEC), users by their channel."""
    room = room_of(channel)
    if room is not None:
        return room, room_channel("{room}")
    return channel, user_channel("{user}")
