"""Hooks on ``gateway serve --workers 2`` with Redis and an OTLP receiver: decisions hold on
every worker, and each hook request's ``traceparent`` is the gateway's exported ``hook <event>``
span, so the backend's spans join the gateway's trace."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from websockets.exceptions import InvalidStatus

from tests.observability.otlp import ReceivedSpan, Receiver, http_receiver
from tests.support.backend import Backend, start_backend
from tests.support.clients import EventReader, open_ws
from tests.support.fleet import fleet, fleet_env
from tests.support.redis import delete_prefix
from tests.support.servers import GatewayProcess, wait_until


@dataclass
class Setup:
    server: GatewayProcess
    backend: Backend
    receiver: Receiver


@pytest.fixture(scope="module")
def setup(redis_base_url: str) -> Iterator[Setup]:
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    with start_backend() as backend, http_receiver() as receiver:
        env = fleet_env(
            f"{redis_base_url}?prefix={prefix}",
            backend.gateway_env(hook_timeout="2", rate_limit="0"),
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "100",
                "OTEL_SERVICE_NAME": "gateway-hooks-test",
            },
        )
        try:
            with fleet(env) as server:
                yield Setup(server, backend, receiver)
        finally:
            delete_prefix(redis_base_url, prefix)


@pytest.fixture(autouse=True)
def fresh(setup: Setup) -> None:
    setup.backend.reset()


async def connect(server: GatewayProcess, user: str) -> EventReader:
    reader = EventReader(await open_ws(server.ws_url(f"/ws/{user}")), user)
    await reader.until(lambda: reader.has("joined", room="lobby"), 10, "the lobby's joined")
    return reader


async def moderated(reader: EventReader) -> None:
    await reader.until(lambda: reader.has("message", text="moderated"), 10, "the moderated text")


async def test_decisions_hold_on_every_worker(setup: Setup) -> None:
    server, backend = setup.server, setup.backend
    backend.rules(message={"action": "allow", "text": "moderated"})
    readers = [await connect(server, f"member-{n}") for n in range(6)]
    await readers[0].send({"type": "message", "room": "lobby", "text": "raw words"})
    for reader in readers:
        await moderated(reader)
    backend.rules(connect={"action": "deny", "reason": "closed for today"})
    for n in range(4):
        with pytest.raises(InvalidStatus) as refused:
            await open_ws(server.ws_url(f"/ws/late-{n}"))
        assert refused.value.response.status_code == 403
    assert all(request["signature_ok"] for request in backend.requests())
    for reader in readers:
        await reader.close()


async def test_each_hook_request_carries_the_traceparent_of_its_exported_span(
    setup: Setup,
) -> None:
    server, backend, receiver = setup.server, setup.backend, setup.receiver
    reader = await connect(server, f"traced-{uuid.uuid4().hex[:6]}")
    await reader.send({"type": "join", "room": "traced"})
    await reader.until(lambda: reader.has("joined", room="traced"), 10, "joined")
    await reader.send({"type": "message", "room": "traced", "text": "hello"})
    await reader.until(lambda: reader.has("message", text="hello"), 10, "the message")
    await reader.close()
    for event in ("connect", "join", "message"):
        [request] = backend.requests(event)
        span = exported_span(receiver, f"hook {event}", request["traceparent"])
        assert span.kind == "client"
        assert span.attributes["gateway.hook.event"] == event
        if event == "connect":
            parent = exported_span(receiver, None, f"00-{span.trace_id}-{span.parent_span_id}-01")
            assert parent.name == "HTTP /ws/{client_id}"
        else:
            assert span.links, "join and message hooks link to the connection's span"


def exported_span(receiver: Receiver, name: str | None, traceparent: str) -> ReceivedSpan:
    """The exported span a W3C ``traceparent`` names (waiting for the exporter's batch)."""
    version, trace_id, span_id, _flags = traceparent.split("-")
    assert version == "00"

    def found() -> list[ReceivedSpan]:
        return [
            s
            for s in receiver.snapshot()
            if s.span_id == span_id and s.trace_id == trace_id and name in (None, s.name)
        ]

    wait_until(found, 15, f"span {name or span_id} at the receiver")
    return found()[0]
