"""Start, pin, measure and stop the servers under test (the seed baseline, Bun's pub/sub as the
reference, the gateway) and the private redis-server a Redis run measures with them."""

from __future__ import annotations

import contextlib
import http.client
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal
from urllib.parse import urlsplit

from loadtest import procstat
from loadtest.bun import SERVER_SCRIPT, bun_binary

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "loadtest" / "results"

WireFormat = Literal["json", "text"]
Kind = Literal["seed", "bun", "gateway", "redis", "attached"]

# What every benchmark run of the gateway sets: no rate limit (the runs measure fan-out), no
# idle close, heartbeats out of the way, a short drain so teardown is quick.
GATEWAY_BENCH_ENV: dict[str, str] = {
    "GATEWAY_RATE_LIMIT": "0",
    "GATEWAY_IDLE_TIMEOUT": "0",
    "GATEWAY_HEARTBEAT_INTERVAL": "3600",
    "GATEWAY_HEARTBEAT_TIMEOUT": "3600",
    "GATEWAY_DRAIN_TIMEOUT": "2",
}


@dataclass
class Server:
    """A server under test: its address, wire format and the processes to measure."""

    label: str
    kind: Kind
    host: str
    port: int
    wire: WireFormat
    roots: list[int]
    popen: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    url: str = ""
    _log: IO[bytes] | None = None

    def pids(self) -> list[int]:
        return procstat.process_tree(self.roots)

    def cpu_seconds(self) -> float:
        return procstat.cpu_seconds(self.pids())

    def cpu_split(self) -> tuple[float, float]:
        """(user, system) CPU seconds, as :func:`loadtest.procstat.cpu_split`."""
        return procstat.cpu_split(self.pids())

    def rss_bytes(self) -> int:
        return procstat.rss_bytes(self.pids())

    def chat_path(self, client_id: str) -> str:
        """The chat endpoint for ``client_id`` in this server's wire format."""
        if self.kind not in ("seed", "bun") and self.wire == "text":
            return f"/ws/{client_id}?format=text"
        return f"/ws/{client_id}"

    def stop(self, timeout: float = 8.0) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_status(host: str, port: int, path: str, timeout: float = 2.0) -> int:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def _wait_ready(server: Server, path: str, deadline_s: float, min_procs: int = 1) -> None:
    deadline = time.monotonic() + deadline_s
    last = "no answer"
    while time.monotonic() < deadline:
        if server.popen is not None and server.popen.poll() is not None:
            raise RuntimeError(
                f"{server.label} exited with {server.popen.returncode}:\n{server.log_tail()}"
            )
        try:
            status = http_status(server.host, server.port, path)
            if status == 200 and len(server.pids()) >= min_procs:
                return
            last = f"HTTP {status}, {len(server.pids())} processes"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.label} not ready in {deadline_s}s ({last}):\n{server.log_tail()}")


def _preexec() -> None:
    # Servers get a high open-file limit (the idle scenario holds 20k+ sockets).
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200_000, 200_000))
    except (ValueError, OSError):
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _spawn(label: str, kind: Kind, cmd: list[str], env: dict[str, str], port: int) -> Server:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    log_path = RESULTS_DIR / f"{label}.log"
    log = log_path.open("wb")
    popen = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_preexec,
    )
    wire: WireFormat = "json" if kind == "gateway" else "text"
    return Server(
        label=label,
        kind=kind,
        host="127.0.0.1",
        port=port,
        wire=wire,
        roots=[popen.pid],
        popen=popen,
        log_path=log_path,
        command=cmd,
        env={k: v for k, v in env.items() if k.startswith(("GATEWAY_", "OTEL_"))},
        _log=log,
    )


def _pin(core: str | None) -> list[str]:
    if core is None or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", core]


def start_seed(core: str | None = "0", label: str = "seed") -> Server:
    port = free_port()
    cmd = [
        *_pin(core),
        sys.executable,
        "-m",
        "uvicorn",
        "loadtest.seed_server:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    server = _spawn(label, "seed", cmd, dict(os.environ), port)
    _wait_ready(server, "/", 30.0)
    return server


def start_bun(core: str | None = "0", label: str = "bun") -> Server:
    """Bun's pub/sub speaking the seed's frames (loadtest/bun/server.ts); the pinned Bun is
    installed on first use (loadtest/bun/__init__.py)."""
    port = free_port()
    cmd = [*_pin(core), str(bun_binary()), str(SERVER_SCRIPT), "127.0.0.1", str(port)]
    server = _spawn(label, "bun", cmd, dict(os.environ), port)
    _wait_ready(server, "/", 30.0)
    return server


def start_redis(core: str | None = "0", label: str = "redis") -> Server:
    """A private redis-server on a free loopback port, no persistence, pinned like the workers
    so its CPU is counted with theirs (``Server.url`` is the broker URL)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (scripts/ensure-redis.sh installs it)")
    port = free_port()
    cmd = [*_pin(core), binary, "--bind", "127.0.0.1", "--port", str(port)]
    cmd += ["--save", "", "--appendonly", "no", "--dir", str(RESULTS_DIR), "--loglevel", "warning"]
    server = _spawn(label, "redis", cmd, dict(os.environ), port)
    deadline = time.monotonic() + 15.0
    while not _redis_pongs(port):
        exited = server.popen is not None and server.popen.poll() is not None
        if exited or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{label} did not answer PING:\n{server.log_tail()}")
        time.sleep(0.05)
    server.url = f"redis://127.0.0.1:{port}/0"
    return server


def _redis_pongs(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def gateway_command() -> list[str]:
    here = Path(sys.executable).parent / "gateway"
    if here.exists():
        return [str(here)]
    found = shutil.which("gateway")
    if found:
        return [found]
    return [sys.executable, "-m", "gateway"]


def start_gateway(
    core: str | None = "0",
    workers: int = 1,
    env: dict[str, str] | None = None,
    label: str = "gateway",
    command: list[str] | None = None,
) -> Server:
    """``gateway serve`` (or ``command serve``) on a free loopback port, pinned to ``core``."""
    port = free_port()
    base = command or gateway_command()
    cmd = [*_pin(core), *base, "serve", "--host", "127.0.0.1", "--port", str(port)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    full_env = dict(os.environ)
    # ``workers`` decides: `gateway serve` without --workers reads GATEWAY_WORKERS, and a
    # one-worker run must not become a fleet because the caller's shell exports it.
    full_env.pop("GATEWAY_WORKERS", None)
    full_env.update(GATEWAY_BENCH_ENV)
    full_env.update(env or {})
    server = _spawn(label, "gateway", cmd, full_env, port)
    _wait_ready(server, "/healthz", 60.0, min_procs=workers + 1 if workers > 1 else 1)
    if workers > 1:
        _wait_ready(server, "/readyz", 30.0, min_procs=workers + 1)
    return server


def attach(url: str, wire: WireFormat = "json", label: str = "attached") -> Server:
    """A server somebody else started (``http://127.0.0.1:PORT`` or ``ws://…``).

    Its processes are found through the listening socket, so CPU and RSS still work when the
    server runs on this machine under the same user.
    """
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("load runs target loopback only (127.0.0.1, localhost, ::1)")
    roots = procstat.listener_pids(port)
    return Server(label=label, kind="attached", host=host, port=port, wire=wire, roots=roots)
