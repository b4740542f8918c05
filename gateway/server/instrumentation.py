"""OpenTelemetry's FastAPI instrumentation, the one tracing piece that knows the framework."""

from __future__ import annotations

from fastapi import FastAPI

from gateway import tracing


def instrument(app: FastAPI) -> None:
    """Trace HTTP routes (the chat WebSockets bypass FastAPI and get their span from
    :func:`gateway.tracing.connection_span`).

    Any WebSocket FastAPI still routes gets a span but no span per ``send``/``receive`` (one
    per chat frame would flood a backend). The instrumentor resolves the global provider
    lazily, so it may run before :func:`gateway.tracing.start` sets it (the middleware stack is
    built on the first call).
    """
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        exclude_spans=["send", "receive"],
        excluded_urls=tracing.excluded_urls(),
        server_request_hook=tracing.scrub_token,
    )
