"""A fleet: ``gateway serve --workers N`` (a gunicorn master and its uvicorn workers) on Redis,
or what the image runs (plain ``gunicorn -c ops/gunicorn.conf.py``).

One way to start it, wait until every worker serves, and stop it; what its JSON logs say (which
worker serves whom); and the kernel's view of it: which processes are its workers, and which
worker holds the server end of a client's connection (the client's port in ``/proc/net/tcp``,
that socket's inode among the file descriptors in ``/proc/<pid>/fd``).

The suites add their own settings and clients on top: tests/redis/fleet.py and
tests/observability/fleet.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tests.support.servers import GatewayProcess, launch_gateway, wait_until

WORKERS = 2
REPO = Path(__file__).resolve().parents[2]
"""The checkout: ``ops/gunicorn.conf.py`` is read relative to it, as in the image."""


def fleet_env(broker_url: str, *settings: Mapping[str, str]) -> dict[str, str]:
    """What every fleet runs with: the broker (Redis, under a test's own key prefix) and JSON
    logs, whose records carry the worker's pid; then ``settings``, each over the one before."""
    env = {"GATEWAY_BROKER_URL": broker_url, "GATEWAY_LOG_FORMAT": "json"}
    for more in settings:
        env.update(more)
    return env


def launch_fleet(
    env: dict[str, str],
    workers: int = WORKERS,
    port: int | None = None,
    command: list[str] | None = None,
    cwd: Path | None = None,
) -> GatewayProcess:
    """A fleet whose ``workers`` workers all serve; the caller stops it (``server.stop()``).
    One worker is a single ``gateway serve`` process, ready once /healthz answers."""
    server = launch_gateway(env, workers, port, command=command, cwd=cwd)
    try:
        if workers > 1:
            wait_for_workers(server, workers)
    except BaseException:
        server.stop()  # a fleet that never started fully is not left behind
        raise
    return server


@contextlib.contextmanager
def fleet(
    env: dict[str, str],
    workers: int = WORKERS,
    command: list[str] | None = None,
    cwd: Path | None = None,
) -> Iterator[GatewayProcess]:
    """A serving fleet for the block; stopped (SIGTERM, bounded wait, then SIGKILL) afterwards."""
    server = launch_fleet(env, workers, command=command, cwd=cwd)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def plain_gunicorn(redis_url: str, env: dict[str, str] | None = None) -> Iterator[GatewayProcess]:
    """What the image runs: ``gunicorn -c ops/gunicorn.conf.py gateway.app:app``, 2 workers."""
    command = [
        str(Path(sys.executable).with_name("gunicorn")),
        "-c",
        "ops/gunicorn.conf.py",
        "gateway.app:app",
    ]
    full = fleet_env(redis_url, {"GATEWAY_WORKERS": "2"}, env or {})
    with fleet(full, 2, command=command, cwd=REPO) as server:
        yield server


def worker_pids(master: int) -> set[int]:
    """The live (not zombie) children of the gunicorn master."""
    pids = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == master and fields[0] != "Z":
            pids.add(int(entry.name))
    return pids


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (the gunicorn master and its workers)."""
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    frontier.append(child)
    return found


def log_records(server: GatewayProcess) -> list[dict[str, Any]]:
    """The fleet's log as records (``GATEWAY_LOG_FORMAT=json``: one JSON object a line)."""
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


def pid_of_users(server: GatewayProcess) -> dict[str, int]:
    """The worker pid serving each user's latest connection, from ``connection opened`` lines."""
    return {
        record["user"]: record["pid"]
        for record in log_records(server)
        if record.get("event") == "connection opened"
    }


def serving_workers(server: GatewayProcess, exclude: Iterable[int] = ()) -> list[int]:
    """The master's live workers (but ``exclude``) that logged the end of the application's
    startup, and so accept connections. A worker signalled while it still boots just dies (it
    has no connections and no drain yet), and while one boots the other gets every client."""
    started = {
        record.get("pid")
        for record in log_records(server)
        if str(record.get("event", "")).startswith("Application startup complete")
    }
    return sorted(pid for pid in worker_pids(server.pid) - set(exclude) if pid in started)


def wait_for_workers(
    server: GatewayProcess, count: int = WORKERS, exclude: Iterable[int] = ()
) -> list[int]:
    """The master's ``count`` serving workers (but ``exclude``), once there are that many."""
    skip = tuple(exclude)
    wait_until(
        lambda: len(serving_workers(server, skip)) == count,
        20,
        f"never {count} workers serving:\n{server.log()[-2000:]}",
    )
    return serving_workers(server, skip)


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(fd.path)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def connection_owners(
    server_port: int, client_ports: Iterable[int], pids: Iterable[int]
) -> dict[int, int]:
    """client port -> pid of the worker holding the server end of that loopback connection."""
    wanted = set(client_ports)
    inode_of: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rpartition(":")[2], 16)
                remote_port = int(fields[2].rpartition(":")[2], 16)
                inode = int(fields[9])
                if local_port == server_port and remote_port in wanted and inode:
                    inode_of[remote_port] = inode
    owners = {}
    for pid in pids:
        inodes = _socket_inodes(pid)
        for port, inode in inode_of.items():
            if inode in inodes:
                owners[port] = pid
    return owners


def serving_process(server_port: int, client_port: int, candidates: Iterable[int]) -> int:
    """Which of ``candidates`` holds the server end of the connection from ``client_port``."""
    pids = list(candidates)
    owner = connection_owners(server_port, [client_port], pids).get(client_port)
    assert owner is not None, f"no process among {pids} holds the socket of port {client_port}"
    return owner
