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


def create_broker(url: str, deliver: DeliverFn, history_size: int) -> Broker:
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from gateway.broker.memory import MemoryBroker

        return MemoryBroker(deliver, history_size)
    if scheme in {"redis", "rediss"}:
        try:
            from gateway.broker.redis import RedisBroker
        except ImportError as error:
            raise ValueError(f"redis broker unavailable: {error}") from error
        return RedisBroker(url, deliver, history_size)
    raise ValueError(f"unsupported broker URL scheme: {scheme!r}")
