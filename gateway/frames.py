"""What a socket's send side shares with the outbox, importable without :mod:`gateway.metrics`.

gunicorn builds its workers' class, and with it the WebSocket protocol
(:mod:`gateway.server.wsprotocol`, a :class:`~gateway.outbox.FrameSink`), in the master before
the fork: a prometheus_client imported there, before multiprocess mode is set up, keeps the
workers' gauges in memory, out of the exposition.
"""

from __future__ import annotations

from websockets.frames import Frame, Opcode


def encode_text_frame(payload: str) -> bytes:
    """A server-to-client text frame: unmasked, so the same bytes serve every recipient."""
    return Frame(Opcode.TEXT, payload.encode()).serialize(mask=False)


class ClientGone(Exception):
    """The peer is gone; nothing more can be written."""
