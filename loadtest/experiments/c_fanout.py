"""Experiment: the floor of issue 19's next step, a broadcast's per-recipient loop in C.

At 40k deliveries/s the gateway's kernel time per delivery is within 1.14 to 1.27 times
Bun's, its user time 7.7 to 10 times Bun's (loadtest/RESULTS.md, "#19: where the 40k/s time
goes"). What is left in user space is Python per recipient: ``Session.deliver``,
``Outbox.put``, the protocol's ``write_now``, uvloop's ``write``. Here a broadcast makes one
call into C that ``send()``s the frame to every member's socket, so the Python per recipient is
gone, and measures what such a step can reach at most.

It is a floor, not a design: it skips what the shipped path checks per recipient (a member's
held messages while it resumes, its send queue, its close, the tick's corking of several
frames into one ``send()``), so it is only correct for the benchmark's members, which read
everything and never resume. A member whose ``send()`` did not take the whole frame gets the
rest through uvloop's transport, which buffers it as shipped, and from then on goes through the
shipped path (its later frames must queue behind that rest). A shippable version keeps those
states in C beside the socket list, as uWebSockets' ``publish`` does.

The C source is compiled on first use with the machine's ``cc`` into
``~/.cache/gateway-bench/`` and called through ``ctypes`` (which releases the GIL for the call).

With ``install(corked=True)`` (``loadtest.experiments.c_fanout_corked``) a channel's frames of
one loop tick are joined and sent once per member, the per-tick corking the shipped path does
per socket: without it a C loop costs more than the shipped path at full rate (one ``send()``
per frame and member).

    python -m loadtest.experiments.c_fanout serve --host 127.0.0.1 --port 8000
    python -m loadtest.bench --scenario closeness --groups fanout,latency --target bun,gateway \\
        --variant cfanout=loadtest.experiments.c_fanout \\
        --variant cfanoutcorked=loadtest.experiments.c_fanout_corked
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gateway import metrics, tracing
from gateway.broker import Envelope, room_of
from gateway.cli import main
from gateway.hub import Hub
from gateway.outbox import OutFrame, count_delivered
from gateway.session import Session

C_SOURCE = r"""
#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>

/* send() the frame to every socket; the index and bytes sent of each that took less. */
int fanout(const int *fds, int n, const char *frame, long size, int *short_at, long *sent) {
    int shorts = 0;
    for (int i = 0; i < n; i++) {
        ssize_t took = send(fds[i], frame, (size_t)size, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (took != size) {
            short_at[shorts] = i;
            sent[shorts] = took < 0 ? 0 : took;
            shorts++;
        }
    }
    return shorts;
}
"""

CACHE = Path.home() / ".cache" / "gateway-bench"


def library() -> ctypes.CDLL:
    digest = hashlib.sha256(C_SOURCE.encode()).hexdigest()[:12]
    built = CACHE / f"c_fanout-{digest}.so"
    if not built.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        source = CACHE / f"c_fanout-{digest}.c"
        source.write_text(C_SOURCE)
        partial = built.with_suffix(".tmp")
        subprocess.run(
            ["cc", "-O2", "-shared", "-fPIC", "-o", str(partial), str(source)], check=True
        )
        partial.rename(built)
    lib = ctypes.CDLL(str(built))
    lib.fanout.restype = ctypes.c_int
    lib.fanout.argtypes = [
        ctypes.POINTER(ctypes.c_int),
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_long,
        ctypes.POINTER(ctypes.c_int),
        ctypes.POINTER(ctypes.c_long),
    ]
    return lib


class Members:
    """One channel's sockets for the C loop, and the members the shipped path serves."""

    def __init__(self, members: set[Session]) -> None:
        self.size = len(members)
        self.fast: list[Session] = []
        self.slow: list[Session] = []
        fds: list[int] = []
        wires = {session.outbox.wire for session in members}
        self.wire = next(iter(wires)) if len(wires) == 1 else None
        for session in members:
            transport: Any = getattr(session.outbox.sink, "_raw_transport", None)
            sock = None if transport is None else transport.get_extra_info("socket")
            if self.wire is None or sock is None or transport.get_write_buffer_size():
                self.slow.append(session)
            else:
                self.fast.append(session)
                fds.append(sock.fileno())
        count = max(len(fds), 1)
        self.fds = (ctypes.c_int * count)(*fds)
        self.short_at = (ctypes.c_int * count)()
        self.sent = (ctypes.c_long * count)()

    def send(self, data: bytes) -> int:
        """``data`` to every fast member in one C call; how many took all of it. A member that
        took less gets the rest through its transport and the shipped path from then on."""
        assert _lib is not None
        fast = self.fast
        shorts: int = _lib.fanout(self.fds, len(fast), data, len(data), self.short_at, self.sent)
        if not shorts:
            return len(fast)
        moved = {self.short_at[k]: self.sent[k] for k in range(shorts)}
        for i, sent in moved.items():
            transport: Any = fast[i].outbox.sink._raw_transport  # type: ignore[attr-defined]
            transport.write(memoryview(data)[sent:])
            self.slow.append(fast[i])
        kept = [i for i in range(len(fast)) if i not in moved]
        self.fast = [fast[i] for i in kept]
        self.fds = (ctypes.c_int * max(len(kept), 1))(*(self.fds[i] for i in kept))
        return len(fast) - shorts


_lib: ctypes.CDLL | None = None
_corked = False
_held: dict[str, list[bytes]] = {}
"""Per channel, the frames of this tick waiting for :func:`_flush` (``install(corked=True)``)."""
_channels: dict[str, Members] = {}
_shipped_deliver = Hub.deliver


def deliver(self: Hub, envelope: Envelope) -> None:
    """The shipped fan-out, with one C call for the members whose sockets take frames at once."""
    members = self._members.get(envelope.channel)
    if not members or envelope.event["type"] == "presence" or _lib is None:
        _shipped_deliver(self, envelope)
        return
    channel = envelope.channel
    room = room_of(channel)
    cached = _channels.get(channel)
    if cached is None or cached.size != len(members):
        cached = _channels[channel] = Members(members)
    frame = OutFrame(envelope.event, channel, envelope.seq)
    written = 0
    with tracing.broadcast_span(self.broker, envelope, len(members)):
        started = time.perf_counter()
        fast = cached.fast
        if fast:
            assert cached.wire is not None  # fast members exist only for a one-wire channel
            data = frame.wire(cached.wire) or b""
            if _corked:
                written = len(fast)  # held for this tick, as the shipped corking counts it
                held = _held.get(channel)
                if held is None:
                    _held[channel] = [data]
                    asyncio.get_running_loop().call_soon(_flush, channel)
                else:
                    held.append(data)
            else:
                written = cached.send(data)
        for session in cached.slow:
            written += session.deliver(frame, room)
        elapsed = time.perf_counter() - started
    count_delivered(written)
    metrics.BROADCAST_DURATION.observe(elapsed)
    metrics.BROADCAST_RECIPIENTS.observe(len(members))
    metrics.DELIVERY_LATENCY.observe(max(time.time() - envelope.accepted_at, 0.0))


def _flush(channel: str) -> None:
    """The tick's frames of one channel, joined, to every fast member: one ``send()`` each."""
    held = _held.pop(channel, None)
    cached = _channels.get(channel)
    if held and cached is not None and cached.fast:
        cached.send(b"".join(held))


def install(*, corked: bool = False) -> None:
    """``corked``: a channel's frames of one loop tick go out joined, one ``send()`` per member
    (the shipped path corks per socket; Bun's ``publish`` the same)."""
    global _lib, _corked
    _lib = library()
    _corked = corked
    Hub.deliver = deliver  # type: ignore[method-assign]


if __name__ == "__main__":
    install()
    sys.exit(main(sys.argv[1:]))
