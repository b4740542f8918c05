"""Experiment: one ``send()`` per socket per event-loop tick ("corked" writes).

The shipped fan-out writes every frame to its socket at once (``transport.write`` per
recipient per message). On loopback a profile of the gateway at max rate shows about 70 % of
its CPU inside that call: one syscall and one TCP segment per delivery. Here a frame for a
socket that already has frames pending in this tick is appended to them instead, and one
callback per tick (``loop.call_soon``) writes each dirty socket's frames with a single
``transport.write``. Frames keep their order; a close or a ping flushes what is pending first.

``LOADTEST_CORK=first-now`` (the adaptive variant) writes a socket's first frame of a tick at
once, as the shipped code does, and corks only the second and later frames of the same tick:
at low rates it behaves exactly like the shipped code, at high rates it still coalesces.

Run it like ``gateway`` (the benchmark does with
``--gateway-command "python -m loadtest.experiments.corked_writes"``)::

    python -m loadtest.experiments.corked_writes serve --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import os
import sys
from typing import Any

from gateway import wsprotocol
from gateway.cli import main

Protocol = wsprotocol.GatewayWebSocketProtocol

FIRST_NOW = os.environ.get("LOADTEST_CORK", "") == "first-now"

_dirty: list[Any] = []
_scheduled = [False]
_original_close_now = Protocol.close_now
_original_ping = getattr(Protocol, "send_keepalive_ping", None)


def _flush_one(proto: Any) -> None:
    parts: list[bytes] | None = proto.__dict__.pop("_cork", None)
    if parts and not proto.transport.is_closing():
        proto.transport.write(parts[0] if len(parts) == 1 else b"".join(parts))


def _flush_all() -> None:
    _scheduled[0] = False
    dirty = _dirty[:]
    _dirty.clear()
    for proto in dirty:
        _flush_one(proto)


def _schedule(proto: Any) -> None:
    _dirty.append(proto)
    if not _scheduled[0]:
        _scheduled[0] = True
        proto.loop.call_soon(_flush_all)


def write_frame(self: Any, data: bytes) -> None:
    cork: list[bytes] | None = self.__dict__.get("_cork")
    if cork is not None:
        cork.append(data)
        return
    if FIRST_NOW:
        # First frame of this tick goes out now; later ones in the same tick are corked.
        self.transport.write(data)
        self.__dict__["_cork"] = []
        _schedule(self)
        return
    self.__dict__["_cork"] = [data]
    _schedule(self)


def close_now(self: Any, code: int, reason: str) -> None:
    _flush_one(self)
    _original_close_now(self, code, reason)


def send_keepalive_ping(self: Any) -> None:
    _flush_one(self)
    if _original_ping is not None:
        _original_ping(self)


def install() -> None:
    Protocol.write_frame = write_frame  # type: ignore[method-assign]
    Protocol.close_now = close_now  # type: ignore[method-assign]
    if _original_ping is not None:
        Protocol.send_keepalive_ping = send_keepalive_ping  # type: ignore[attr-defined]


if __name__ == "__main__":
    install()
    sys.exit(main(sys.argv[1:]))
