"""Real Redis for tests: the shared server under a key prefix of each test's own, and private
``redis-server`` processes that a test may stop and start (never the shared one).

Where no ``redis-server`` exists at all the tests skip, saying so; with ``CI=true`` they fail.
When nothing answers on 127.0.0.1:6379 but the binary exists, one private server stands in for
the session.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.servers import free_port, scaled, wait_until
from tests.support.skips import unavailable
from tests.support.topology import (
    ClusterTopology,
    MissingBinary,
    SentinelTopology,
    cluster_topology,
    sentinel_topology,
)

HOST = "127.0.0.1"
SHARED_PORT = 6379


def server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable(
            "no redis-server binary on this machine (Debian: apt-get install redis-server)",
            "CI=true: Redis is required",
        )
    return binary


def answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


class RedisServer:
    """A private ``redis-server`` on a free loopback port, without persistence: a restart
    loses every key, like a Redis without AOF/RDB (the harder case for the gateway)."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.binary = server_binary()
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", HOST,
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--daemonize", "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        wait_until(
            lambda: self._alive() and answers(self.url), 10, f"redis-server :{self.port} to answer"
        )

    def _alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {(self.directory / 'redis.log').read_text()}")
        return True

    def stop(self) -> None:
        """SIGTERM (a clean shutdown, as an operator restart does), bounded, then SIGKILL."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=scaled(10))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def private_redis() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="gateway-redis-") as directory:
        server = RedisServer(Path(directory))
        server.start()
        try:
            yield server
        finally:
            server.stop()


def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for first in range(0, len(keys), 500):
            client.delete(*keys[first : first + 500])
    except (redis.RedisError, OSError):
        pass  # a test that stopped its Redis has nothing left to clean
    finally:
        client.close()


# Fixtures (registered for the whole suite by tests/conftest.py)


@pytest.fixture(scope="session")
def redis_base_url() -> Iterator[str]:
    """The shared Redis at 127.0.0.1:6379, or a private stand-in for the session."""
    shared = f"redis://{HOST}:{SHARED_PORT}/0"
    if answers(shared):
        yield shared
        return
    server_binary()
    with private_redis() as server:
        yield server.url


@pytest.fixture
def redis_url(redis_base_url: str) -> Iterator[str]:
    """A broker URL whose keys and channels carry a prefix of this test's own; removed after."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    try:
        yield f"{redis_base_url}?prefix={prefix}"
    finally:
        delete_prefix(redis_base_url, prefix)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A private redis-server this test may stop, kill and restart."""
    with private_redis() as server:
        yield server


@pytest.fixture(scope="module")
def sentinel() -> Iterator[SentinelTopology]:
    """1 primary + 2 replicas + 3 sentinels, shared by a test module (tests that kill or freeze
    a node leave it healthy again, or say so)."""
    try:
        with sentinel_topology() as topology:
            yield topology
    except MissingBinary as error:
        unavailable(str(error))


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterTopology]:
    """A 3-master Redis Cluster, shared by a test module."""
    try:
        with cluster_topology() as topology:
            yield topology
    except MissingBinary as error:
        unavailable(str(error))
