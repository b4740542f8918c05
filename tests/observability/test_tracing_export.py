"""Traces as a backend receives them from `gateway serve`: OTLP over HTTP and gRPC, real server."""

from __future__ import annotations

import json

import httpx

from tests.observability.otlp import ReceivedSpan, Receiver, grpc_receiver, http_receiver
from tests.support.clients import of_type, open_ws, recv_until
from tests.support.servers import scaled, start_gateway, wait_until

TRACE_ENV = {
    "OTEL_BSP_SCHEDULE_DELAY": "100",
    "OTEL_SERVICE_NAME": "gateway-test",
    "GATEWAY_API_KEY": "test-key",
    "GATEWAY_RATE_LIMIT": "0",
}
PUBLISH = "publish room:{room}"
SECRET = "not-for-the-tracing-backend-5d1"


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [
        span
        for span in spans
        if span.trace_id == parent.trace_id and span.parent_span_id == parent.span_id
    ]


async def test_http_and_websocket_messages_trace_through_to_their_broadcast() -> None:
    with http_receiver() as receiver:
        env = {**TRACE_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
        with start_gateway(env) as server:
            ws = await open_ws(server.ws_url(f"/ws/alice?token={SECRET}"))
            await recv_until(ws, of_type("joined"))
            for n in range(3):
                await ws.send(json.dumps({"type": "message", "text": f"ws {n}"}))
                await recv_until(ws, of_type("message", text=f"ws {n}"))
            async with httpx.AsyncClient(timeout=scaled(5)) as client:
                posted = await client.post(
                    server.base_url + "/api/rooms/lobby/messages",
                    json={"text": "from the api"},
                    headers={"Authorization": "Bearer test-key"},
                )
            assert posted.status_code == 202
            await recv_until(ws, of_type("message", text="from the api"))
            await ws.close()

            def websocket_span_exported() -> bool:
                spans = receiver.snapshot()
                return any(s.kind == "server" and "/ws/" in s.name for s in spans) and (
                    len([s for s in spans if s.name == "broadcast"]) >= 5
                )

            wait_until(websocket_span_exported, 15, "spans never reached the receiver")
            pid = server.pid

    spans = receiver.snapshot()
    assert not [s for s in spans if s.name.endswith((" send", " receive"))], "per-frame spans"
    assert not [s for s in spans if "healthz" in s.name], "probes are not traced"
    assert {s.resource["service.name"] for s in spans} == {"gateway-test"}
    assert {s.pid for s in spans} == {pid}
    assert SECRET not in repr(spans)

    (post,) = [s for s in spans if s.kind == "server" and s.name.startswith("POST")]
    (publish,) = children(spans, post)
    assert (publish.name, publish.kind) == (PUBLISH, "producer")
    assert publish.attributes["messaging.destination.name"] == "lobby"
    assert publish.attributes["messaging.system"] == "gateway"
    (broadcast,) = children(spans, publish)
    assert (broadcast.name, broadcast.kind) == ("broadcast", "consumer")
    assert broadcast.attributes["messaging.destination.name"] == "lobby"
    assert broadcast.attributes["gateway.recipients"] == 1
    assert (
        broadcast.attributes["messaging.message.id"] == publish.attributes["messaging.message.id"]
    )

    (connection,) = [s for s in spans if s.kind == "server" and "/ws/" in s.name]
    assert connection.name == "HTTP /ws/{client_id}"
    assert connection.attributes["http.route"] == "/ws/{client_id}"
    assert "token=[redacted]" in str(connection.attributes.get("http.url"))
    linked = [s for s in spans if s.links == [(connection.trace_id, connection.span_id)]]
    messages = [s for s in linked if "messaging.message.id" in s.attributes]
    assert len(messages) == 3
    for message in messages:
        assert message.parent_span_id == ""
        assert message.trace_id != connection.trace_id
        assert [child.name for child in children(spans, message)] == ["broadcast"]


async def test_grpc_exporter_when_the_protocol_says_so() -> None:
    with grpc_receiver() as receiver:
        env = {
            **TRACE_ENV,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        }
        with start_gateway(env) as server:
            ws = await open_ws(server.ws_url("/ws/bob"))
            await ws.send(json.dumps({"type": "message", "text": "over grpc"}))
            await recv_until(ws, of_type("message", text="over grpc"))
            await ws.close()
            wait_until(lambda: _has_message_broadcast(receiver), 15, "no span over gRPC")


def _has_message_broadcast(receiver: Receiver) -> bool:
    return any("messaging.message.id" in span.attributes for span in receiver.named("broadcast"))
