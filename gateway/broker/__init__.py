"""Brokers chosen by URL; backends are imported only when their scheme is used."""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway.broker.base import (
    CONTROL_CHANNEL,
    Broker,
    BrokerUnavailable,
    DeliverFn,
    Envelope,
    History,
    room_channel,
    room_of,
    user_channel,
)
from gateway.broker.urls import CLUSTER_SCHEMES, SCHEMES

__all__ = [
    "CONTROL_CHANNEL",
    "Broker",
    "BrokerUnavailable",
    "DeliverFn",
    "Envelope",
    "History",
    "create_broker",
    "room_channel",
    "room_of",
    "user_channel",
]


def create_broker(
    url: str, deliver: DeliverFn, history_size: int, *, min_replicas: int = 0
) -> Broker:
    """``min_replicas``: replicas that must hold a kept message (Redis ``WAIT``) before it is
    acknowledged and fanned out (see :mod:`gateway.broker.durable`)."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from gateway.broker.memory import MemoryBroker

        return MemoryBroker(deliver, history_size)
    if scheme in CLUSTER_SCHEMES:
        from gateway.broker.cluster import ClusterBroker

        return ClusterBroker(url, deliver, history_size, min_replicas=min_replicas)
    if scheme in SCHEMES - {"memory"}:
        try:
            from gateway.broker.redis import RedisBroker
        except ImportError as error:
            raise ValueError(f"redis broker unavailable: {error}") from error
        return RedisBroker(url, deliver, history_size, min_replicas=min_replicas)
    raise ValueError(f"unsupported broker URL scheme: {scheme!r}")
