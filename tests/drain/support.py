"""Helpers of the drain tests: a reader that records a connection to its close, a watch on a
process's exit, and what the drain suites share (settings, bulk publishing, the sent-away check).

A stalled reader (:class:`tests.support.rawws.StalledClient`) is the only way to see a drain
*hold* frames: what the server cannot write waits in the connection's queue, and the drain must
flush that queue before its close.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.support.clients import of_type, recv_until
from tests.support.fleet import log_records
from tests.support.rawws import Received
from tests.support.servers import GatewayProcess, scaled


async def record(ws: ClientConnection, within: float = 10) -> Received:
    """Read a ``websockets`` connection until the server closes it (``within`` seconds, scaled)."""
    received = Received()
    async with asyncio.timeout(scaled(within)):
        try:
            async for frame in ws:
                assert isinstance(frame, str)
                received.add_text(frame)
        except ConnectionClosed:
            pass
    close = ws.protocol.close_rcvd
    received.close_code = close.code if close is not None else None
    return received


class ExitWatch:
    """Notes the moment a process exits, however busy the test is when it happens."""

    def __init__(self, wait: Callable[[], object]) -> None:
        self.started = time.monotonic()
        self.exited_at: float | None = None
        self._wait = wait
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    @classmethod
    def of(cls, process: subprocess.Popen[bytes]) -> ExitWatch:
        return cls(process.wait)

    @classmethod
    def of_pid(cls, pid: int) -> ExitWatch:
        """For a process that is not our child (a gunicorn worker): poll /proc."""

        def gone() -> None:
            while True:
                try:
                    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                except OSError:
                    return
                if state in ("Z", "X"):
                    return
                time.sleep(0.01)

        return cls(gone)

    def _watch(self) -> None:
        self._wait()
        self.exited_at = time.monotonic()

    def seconds(self, timeout: float) -> float:
        """Seconds from the watch's start to the exit; waits up to ``timeout`` (scaled)."""
        self._thread.join(scaled(timeout))
        assert self.exited_at is not None, f"still running after {scaled(timeout):.1f} s"
        return self.exited_at - self.started


JITTER_MS = 400
"""The drain jitter of the single-process and one-worker drains (drain_env)."""


BULK_TEXT = "b" * 50_000


def bulk_count() -> int:
    """Enough bulk messages to overflow every buffer between the server and a stalled reader:
    the kernel send buffer can autotune up to ``tcp_wmem``'s maximum, then the transport buffers
    64 KiB, and only then does the connection queue start to hold frames."""
    try:
        wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        wmem_max = 16 * 2**20
    return (wmem_max + 2**20) // len(BULK_TEXT) + 1


BULK = bulk_count()


def drain_env(drain_timeout: float) -> dict[str, str]:
    """A drain of ``drain_timeout`` seconds; room for the bulk messages; JSON logs."""
    return {
        "GATEWAY_DRAIN_TIMEOUT": str(drain_timeout),
        "GATEWAY_DRAIN_JITTER": str(JITTER_MS / 1000),
        "GATEWAY_RATE_LIMIT": "0",
        "GATEWAY_IDLE_TIMEOUT": "0",
        "GATEWAY_MAX_MESSAGE_BYTES": str(len(BULK_TEXT) + 100),
        "GATEWAY_SEND_QUEUE": "10000",
        "GATEWAY_LOG_FORMAT": "json",
    }


async def publish(ws: ClientConnection, room: str, texts: list[str]) -> list[str]:
    """Send chat messages and return their ids as the sender's own echo acknowledges them."""
    for text in texts:
        await ws.send(json.dumps({"type": "message", "room": room, "text": text}))
    ids: list[str] = []
    for _ in texts:
        echo, _ = await recv_until(ws, of_type("message", room=room, **{"from": "publisher"}))
        ids.append(echo["id"])
    return ids


def assert_sent_away(received: Received, who: str) -> None:
    """The last thing a drained client gets is the hint, then the 1012 close."""
    assert received.close_code == 1012, f"{who}: closed with {received.close_code}, not 1012"
    assert received.events, f"{who}: got nothing"
    last = received.events[-1]
    assert last["type"] == "reconnect", f"{who}: last event {last}"
    assert 0 <= last["after_ms"] <= JITTER_MS, last


def drain_lines(server: GatewayProcess) -> list[dict[str, Any]]:
    """The drain sequence's log records (``GATEWAY_LOG_FORMAT=json``)."""
    return [line for line in log_records(server) if line.get("logger") == "gateway.drain"]
