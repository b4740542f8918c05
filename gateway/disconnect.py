"""The catalogue of ways a connection ends.

Every close goes through one of these, so the WebSocket close code a client sees and the
``reason`` label of ``gateway_connections_closed_total`` can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Disconnect:
    code: int
    reason: str
    """Label of ``gateway_connections_closed_total``."""
    detail: str
    """Close-frame reason text (at most 123 bytes on the wire)."""
    reconnect: bool


CLIENT = Disconnect(1000, "client", "client closed", reconnect=False)
IDLE_TIMEOUT = Disconnect(4408, "idle_timeout", "idle timeout", reconnect=True)
HEARTBEAT_TIMEOUT = Disconnect(1011, "heartbeat_timeout", "heartbeat timeout", reconnect=True)
SLOW_CONSUMER = Disconnect(1013, "slow_consumer", "slow consumer", reconnect=True)
CONNECTION_LIMIT = Disconnect(1013, "policy", "connection limit reached", reconnect=True)
DRAIN = Disconnect(1012, "drain", "server draining", reconnect=True)
POLICY = Disconnect(1008, "policy", "policy violation", reconnect=False)
ABUSE = Disconnect(1008, "policy", "repeated rate-limit violations", reconnect=False)
DUPLICATE = Disconnect(1008, "policy", "client id already connected", reconnect=False)
TOKEN_EXPIRED = Disconnect(1008, "policy", "token expired", reconnect=True)
MESSAGE_TOO_BIG = Disconnect(1009, "policy", "frame too large", reconnect=False)
INVALID_UTF8 = Disconnect(1007, "policy", "invalid utf-8", reconnect=False)
PROTOCOL_ERROR = Disconnect(1002, "policy", "protocol error", reconnect=False)
SERVER_ERROR = Disconnect(1011, "error", "server error", reconnect=True)
KICKED = Disconnect(1008, "policy", "disconnected by server", reconnect=False)

CATALOGUE = (
    CLIENT,
    IDLE_TIMEOUT,
    HEARTBEAT_TIMEOUT,
    SLOW_CONSUMER,
    CONNECTION_LIMIT,
    DRAIN,
    POLICY,
    ABUSE,
    DUPLICATE,
    TOKEN_EXPIRED,
    MESSAGE_TOO_BIG,
    INVALID_UTF8,
    PROTOCOL_ERROR,
    SERVER_ERROR,
    KICKED,
)
CLOSE_REASONS = tuple(dict.fromkeys(disconnect.reason for disconnect in CATALOGUE))
"""The ``reason`` labels of ``gateway_connections_closed_total``, in catalogue order."""


def from_peer_close(code: int) -> Disconnect:
    """Map the code reported when the *peer* (or the protocol layer) ended the connection."""
    if code == 1009:
        return MESSAGE_TOO_BIG
    if code == 1007:
        return INVALID_UTF8
    if code == 1002:
        return PROTOCOL_ERROR
    if code in (1000, 1001, 1005):
        return CLIENT
    if code == 1006:
        return CLIENT
    if code == 1011:
        return SERVER_ERROR
    return CLIENT
