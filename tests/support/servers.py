"""Real servers for tests: ``gateway serve`` (or gunicorn) as a subprocess on a free loopback port.

Every wait polls with a deadline; the timeouts scale with ``GATEWAY_TEST_TIMEOUT_FACTOR`` so a
slow CI machine is a setting, not a flake.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

TIMEOUT_FACTOR = float(os.environ.get("GATEWAY_TEST_TIMEOUT_FACTOR", "1"))
GATEWAY_BIN = Path(sys.executable).with_name("gateway")


def scaled(seconds: float) -> float:
    return seconds * TIMEOUT_FACTOR


def free_port() -> int:
    """A loopback port nothing listens on now. The one of the tests: loadtest/servers.py keeps
    its own, since the load tools never import tests/ and the harness must not depend on a
    tool it tests (a broken loadtest/ would fail the whole suite's collection)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], object], timeout: float, message: str, interval: float = 0.05
) -> None:
    """Poll ``predicate`` until it returns truthy or ``timeout`` (scaled) passes."""
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(message)


async def poll_until(
    predicate: Callable[[], object], timeout: float, message: str, interval: float = 0.05
) -> None:
    """``wait_until`` for async tests: the event loop (and every client on it) keeps running."""
    deadline = time.monotonic() + scaled(timeout)
    for _ in range(int(scaled(timeout) / interval) + 2):
        if predicate():
            return
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(interval)
    raise TimeoutError(message)


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> httpx.Response:
        return httpx.get(self.base_url + path, headers=headers, timeout=scaled(5))

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        return self.process.wait(timeout=scaled(timeout))

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, wait (bounded), then SIGKILL: a test never leaves a server behind."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=scaled(timeout))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return int(self.process.returncode)


def _ready(server: GatewayProcess) -> bool:
    if not server.alive():
        raise RuntimeError(f"gateway exited with {server.process.returncode}:\n{server.log()}")
    try:
        return server.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def launch_gateway(
    env: dict[str, str] | None = None,
    workers: int = 1,
    port: int | None = None,
    args: list[str] | None = None,
    command: list[str] | None = None,
    cwd: Path | None = None,
) -> GatewayProcess:
    """``gateway serve`` (or ``command``, run in ``cwd``) on ``port``, once /healthz says 200."""
    port = port or free_port()
    full_env = {**os.environ, "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port)}
    full_env.update(env or {})
    log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
        prefix="gateway-", suffix=".log", delete=False
    )
    if command is None:
        command = [str(GATEWAY_BIN), "serve", *(["--workers", str(workers)] if workers > 1 else [])]
    process = subprocess.Popen(
        [*command, *(args or [])],
        cwd=cwd,
        env=full_env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = GatewayProcess(process, port, Path(log_file.name), env or {})
    try:
        wait_until(lambda: _ready(server), 30, f"gateway on :{port} never became healthy")
    except BaseException:
        server.stop(timeout=5)
        raise
    return server


@contextlib.contextmanager
def start_gateway(
    env: dict[str, str] | None = None,
    workers: int = 1,
    port: int | None = None,
    args: list[str] | None = None,
) -> Iterator[GatewayProcess]:
    """A running gateway for the block; stopped (SIGTERM, bounded wait) afterwards."""
    server = launch_gateway(env, workers, port, args)
    try:
        yield server
    finally:
        server.stop()
