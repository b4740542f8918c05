"""Helpers of the drain tests: a reader that records a connection to its close, a watch on a
process's exit, and what the drain suites share (settings, bulk publishing, the sent-away check).

A stalled reader (:class:`tests.support.rawws.StalledClient`) is the only way to see a drain
*hold* frames: what the server cannot write waits in the connection's queue, and the drain must
flush that queue before its close.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.support.rawws import Received
from tests.support.servers import scaled


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
