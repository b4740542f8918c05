"""One message, two workers, one trace: the context crosses Redis inside the envelope."""

from __future__ import annotations

from tests.observability.fleet import Listener, fleet
from tests.observability.otlp import ReceivedSpan, http_receiver
from tests.support.clients import of_type
from tests.support.fleet import pid_of_users
from tests.support.metrics import metric
from tests.support.servers import GatewayProcess, poll_until

MAX_CLIENTS = 40
"""Connections opened until both workers hold one; the kernel spreads accepts between the
workers, so two suffice almost always and 40 all landing on one worker does not happen."""


async def clients_on_both_workers(server: GatewayProcess) -> dict[int, Listener]:
    """A connected client per worker pid (the others opened on the way are closed again)."""
    opened: list[Listener] = []
    by_pid: dict[int, Listener] = {}
    for n in range(MAX_CLIENTS):
        user = f"tracer-{n}"
        client = await Listener.connect(server, user)
        opened.append(client)

        def logged(user: str = user) -> bool:
            return user in pid_of_users(server)

        await poll_until(logged, 10, "open not logged")
        by_pid.setdefault(pid_of_users(server)[user], client)
        if len(by_pid) == 2:
            break
    assert len(by_pid) == 2, f"{MAX_CLIENTS} connections all landed on one worker"
    for client in opened:
        if client not in by_pid.values():
            await client.close()
    await poll_until(
        lambda: metric(server.base_url, "gateway_connections") == 2, 10, "closes not counted"
    )
    return by_pid


async def test_a_message_published_on_one_worker_and_delivered_on_the_other_is_one_trace(
    redis_url: str,
) -> None:
    with http_receiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "GATEWAY_RATE_LIMIT": "0",
        }
        with fleet(redis_url, env) as server:
            by_pid = await clients_on_both_workers(server)
            (publisher_pid, sender), (consumer_pid, reader) = by_pid.items()
            await sender.send({"type": "message", "text": "across workers"})
            (event,) = await reader.wait_for(of_type("message", text="across workers"))
            message_id = event["id"]

            def broadcasts() -> list[ReceivedSpan]:
                return [
                    span
                    for span in receiver.named("broadcast")
                    if span.attributes.get("messaging.message.id") == message_id
                ]

            await poll_until(
                lambda: {span.pid for span in broadcasts()} == set(by_pid), 15, "spans missing"
            )
            for client in by_pid.values():
                await client.close()

    (publish,) = [
        span
        for span in receiver.named("publish room:{room}")
        if span.attributes.get("messaging.message.id") == message_id
    ]
    assert publish.pid == publisher_pid
    assert publish.kind == "producer"
    assert publish.attributes["messaging.system"] == "redis"
    spans = {span.pid: span for span in broadcasts()}
    assert set(spans) == {publisher_pid, consumer_pid}
    for span in spans.values():
        assert span.trace_id == publish.trace_id
        assert span.parent_span_id == publish.span_id
        assert span.kind == "consumer"
        assert span.attributes["messaging.destination.name"] == "lobby"
        assert span.attributes["messaging.system"] == "redis"
        assert span.attributes["gateway.recipients"] == 1
    assert (
        spans[consumer_pid].resource["service.instance.id"]
        != publish.resource["service.instance.id"]
    )
