"""The Prometheus series of SPEC.md. Their names are a contract with ops/ dashboards and alerts."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from gateway.disconnect import CLOSE_REASONS

REJECT_REASONS = ("rate_limited", "too_large", "invalid", "forbidden")

CONNECTIONS = Gauge(
    "gateway_connections", "Open WebSocket connections.", multiprocess_mode="livesum"
)
CONNECTIONS_OPENED = Counter("gateway_connections_opened", "WebSocket connections accepted.")
CONNECTIONS_CLOSED = Counter(
    "gateway_connections_closed", "WebSocket connections ended, by reason.", ["reason"]
)
MESSAGES_RECEIVED = Counter("gateway_messages_received", "Chat messages accepted from clients.")
MESSAGES_DELIVERED = Counter(
    "gateway_messages_delivered", "Messages written to client connections."
)
MESSAGES_REJECTED = Counter(
    "gateway_messages_rejected", "Client messages refused, by reason.", ["reason"]
)
BROADCAST_DURATION = Histogram(
    "gateway_broadcast_duration_seconds",
    "Duration of one broadcast's local fan-out.",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
BROADCAST_RECIPIENTS = Histogram(
    "gateway_broadcast_recipients",
    "Local recipients of one broadcast.",
    buckets=(0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)
DELIVERY_LATENCY = Histogram(
    "gateway_delivery_latency_seconds",
    "From acceptance by any worker to the write on this worker.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
DRAINING = Gauge("gateway_draining", "1 while this worker drains.", multiprocess_mode="max")
BROKER_UP = Gauge("gateway_broker_up", "1 while the broker is reachable.", multiprocess_mode="min")

for _reason in CLOSE_REASONS:
    CONNECTIONS_CLOSED.labels(_reason)
for _reason in REJECT_REASONS:
    MESSAGES_REJECTED.labels(_reason)
