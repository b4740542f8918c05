"""Redis topologies on loopback, from Debian's ``redis-server``: Sentinel and Cluster.

Tests, load runs and people (``scripts/redis-topology.py``) start the same shapes: 1 primary + 2
replicas + 3 sentinels, or a 3-master cluster, each process on a free 127.0.0.1 port, without
persistence, its files in a temporary directory removed on teardown. Every wait polls a real
answer (replication link up, sentinels knowing each other, cluster state ok) with a deadline.
Everything announces 127.0.0.1, so no address but loopback is ever handed to a client.

No pytest here: the script uses it too. A missing binary raises :class:`MissingBinary`, which
the test fixtures turn into a skip (or, with ``CI=true``, a failure).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

HOST = "127.0.0.1"
SERVICE = "gateway"
"""The Sentinel service name (``redis+sentinel://…/gateway``)."""
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 4000
TIMEOUT_FACTOR = float(os.environ.get("GATEWAY_TEST_TIMEOUT_FACTOR", "1"))


class MissingBinary(RuntimeError):
    """``redis-server`` or ``redis-cli`` is not installed."""


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise MissingBinary(f"no {name} binary on this machine (Debian: apt-get install {name})")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll until ``predicate`` holds, ``seconds`` (scaled) at most; errors count as not yet."""
    deadline = time.monotonic() + seconds * TIMEOUT_FACTOR
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (redis.RedisError, OSError) as error:
            last = error
        time.sleep(0.05)
    raise TimeoutError(f"{what} within {seconds * TIMEOUT_FACTOR:.0f}s (last error: {last})")


def client(port: int) -> redis.Redis:
    return redis.Redis(
        HOST, port, socket_connect_timeout=1, socket_timeout=2, decode_responses=True
    )


@dataclass
class Node:
    """One redis-server process (data node or sentinel) that a test may kill, freeze or restart."""

    name: str
    port: int
    args: list[str]
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.directory / f"{self.name}.log").open("ab")
        self.process = subprocess.Popen(
            [binary("redis-server"), *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            start_new_session=True,
        )
        log.close()
        wait_for(self.answers, 10, f"{self.name} (:{self.port}) to answer")

    def answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = (self.directory / f"{self.name}.log").read_text(errors="replace")
            raise RuntimeError(f"{self.name} exited:\n{log[-2000:]}")
        with contextlib.closing(client(self.port)) as conn:
            return bool(conn.ping())

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: the crash a failover must survive."""
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGCONT (a frozen process holds its SIGTERM), SIGTERM, bounded wait, SIGKILL."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10 * TIMEOUT_FACTOR)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def data_args(port: int, directory: Path) -> list[str]:
    return [
        "--port", str(port),
        "--bind", HOST,
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
        "--daemonize", "no",
        "--repl-diskless-sync", "yes",
        "--repl-diskless-sync-delay", "0",
        "--replica-announce-ip", HOST,
    ]  # fmt: skip


@dataclass
class Topology:
    directory: Path
    nodes: list[Node] = field(default_factory=list)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()

    def node(self, name: str, port: int, args: list[str]) -> Node:
        node = Node(name, port, args, self.directory)
        self.nodes.append(node)
        node.start()
        return node


@dataclass
class SentinelTopology(Topology):
    """1 primary, 2 replicas, 3 sentinels (quorum 2) monitoring service :data:`SERVICE`."""

    sentinels: list[Node] = field(default_factory=list)
    data: list[Node] = field(default_factory=list)

    def url(self, prefix: str = "", db: int = 0) -> str:
        hosts = ",".join(f"{HOST}:{node.port}" for node in self.sentinels)
        query = f"?prefix={prefix}" if prefix else ""
        return f"redis+sentinel://{hosts}/{SERVICE}/{db}{query}"

    def start(self) -> None:
        primary_port = free_port()
        primary = self.node("primary", primary_port, data_args(primary_port, self.directory))
        self.data.append(primary)
        for n in (1, 2):
            port = free_port()
            args = [*data_args(port, self.directory), "--replicaof", HOST, str(primary_port)]
            self.data.append(self.node(f"replica{n}", port, args))
        for n in (1, 2, 3):
            port = free_port()
            config = self.directory / f"sentinel{n}.conf"
            config.write_text(
                f"port {port}\nbind {HOST}\ndir {self.directory}\n"
                f"sentinel announce-ip {HOST}\nsentinel resolve-hostnames no\n"
                f"sentinel monitor {SERVICE} {HOST} {primary_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {SERVICE} 2\n"
            )
            self.sentinels.append(self.node(f"sentinel{n}", port, [str(config), "--sentinel"]))
        self.wait_healthy(primary_port)

    def primary(self) -> Node:
        """The data node the sentinels currently name as primary."""
        port = self.primary_port()
        return next(node for node in self.data if node.port == port)

    def replicas(self) -> list[Node]:
        port = self.primary_port()
        return [node for node in self.data if node.port != port]

    def primary_port(self) -> int:
        for sentinel in self.sentinels:
            if not sentinel.alive:
                continue
            with contextlib.suppress(redis.RedisError, OSError), client(sentinel.port) as conn:
                address = conn.sentinel_get_master_addr_by_name(SERVICE)
                if address:
                    return int(address[1])
        raise RuntimeError("no sentinel names a primary")

    def wait_healthy(self, primary_port: int | None = None, seconds: float = 30) -> None:
        """Every sentinel agrees on the primary and knows both replicas (as up) and the other
        sentinels; every live replica's link to the primary is up."""
        port = primary_port or self.primary_port()
        live_replicas = [node for node in self.data if node.port != port and node.alive]

        def healthy() -> bool:
            for sentinel in self.sentinels:
                with client(sentinel.port) as conn:
                    state = conn.sentinel_master(SERVICE)
                    if state["port"] != port or state["is_sdown"] or state["is_odown"]:
                        return False
                    if state["num-other-sentinels"] < len(self.sentinels) - 1:
                        return False
                    # A replica's link status here comes from INFO every 10 s: its own INFO
                    # (below) is the fresh word on the link.
                    up = [r for r in conn.sentinel_slaves(SERVICE) if not r["is_sdown"]]
                    if len(up) < len(live_replicas):
                        return False
            for node in live_replicas:
                with client(node.port) as conn:
                    info = conn.info("replication")
                    if info.get("master_port") != port or info.get("master_link_status") != "up":
                        return False
            return True

        wait_for(healthy, seconds, "the sentinel topology to be healthy")

    def revive(self, node: Node) -> None:
        """Start a killed data node again (empty: no persistence) as a replica of the current
        primary, so the next test finds 2 replicas. Told so on its command line: the sentinels
        would make it one too, but only after their next 10-second INFO round."""
        primary = self.primary_port()
        args = [arg for arg in node.args]
        if "--replicaof" in args:
            at = args.index("--replicaof")
            del args[at : at + 3]
        node.args = [*args, "--replicaof", HOST, str(primary)]
        node.start()
        self.wait_healthy(primary)

    def wait_failover(self, old_port: int, seconds: float = 30) -> int:
        """The new primary's port, once every sentinel names one other than ``old_port``
        and it accepts writes."""

        def moved() -> bool:
            ports = set()
            for sentinel in self.sentinels:
                with client(sentinel.port) as conn:
                    address = conn.sentinel_get_master_addr_by_name(SERVICE)
                    ports.add(int(address[1]))
            if len(ports) != 1 or old_port in ports:
                return False
            with client(ports.pop()) as conn:
                return bool(conn.info("replication")["role"] == "master")

        wait_for(moved, seconds, "a failover away from the killed primary")
        return self.primary_port()


@dataclass
class ClusterTopology(Topology):
    """3 masters, no replicas, every slot assigned."""

    def url(self, prefix: str = "") -> str:
        hosts = ",".join(f"{HOST}:{node.port}" for node in self.nodes)
        query = f"?prefix={prefix}" if prefix else ""
        return f"redis+cluster://{hosts}{query}"

    def start(self, masters: int = 3) -> None:
        for n in range(1, masters + 1):
            port = free_port()
            args = [
                *data_args(port, self.directory),
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", "2000",
                "--cluster-announce-ip", HOST,
                "--cluster-port", str(free_port()),  # else port + 10000, over 65535 for many
            ]  # fmt: skip
            self.node(f"master{n}", port, args)
        create = [binary("redis-cli"), "--cluster", "create"]
        create += [f"{HOST}:{node.port}" for node in self.nodes]
        subprocess.run(
            [*create, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30 * TIMEOUT_FACTOR,
        )

        def ready() -> bool:
            for node in self.nodes:
                with client(node.port) as conn:
                    info = conn.execute_command("CLUSTER", "INFO")
                    if isinstance(info, bytes | bytearray):
                        info = info.decode()
                    fields = dict(
                        line.split(":", 1) for line in str(info).splitlines() if ":" in line
                    )
                    if fields.get("cluster_state") != "ok":
                        return False
                    if fields.get("cluster_slots_assigned") != "16384":
                        return False
                    if int(fields.get("cluster_known_nodes", "0")) != len(self.nodes):
                        return False
            return True

        wait_for(ready, 30, "the cluster to be ok on every node")


def node_id(port: int) -> str:
    with client(port) as conn:
        return str(conn.execute_command("CLUSTER", "MYID"))


def move_slot(cluster: ClusterTopology, slot: int, to: Node) -> Node:
    """Reshard one slot, keys included, to ``to`` (what ``redis-cli --cluster reshard`` does per
    slot); returns the node that owned it."""
    with client(to.port) as conn:
        owner_port = next(
            int(shard[2][1])
            for shard in conn.execute_command("CLUSTER", "SLOTS")
            if int(shard[0]) <= slot <= int(shard[1])
        )
    source = next(node for node in cluster.nodes if node.port == owner_port)
    source_id, target_id = node_id(source.port), node_id(to.port)
    with client(source.port) as src, client(to.port) as dst:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        for _ in range(10_000):
            keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
            if not keys:
                break
            src.execute_command("MIGRATE", HOST, to.port, "", 0, 5000, "KEYS", *keys)
        for node in cluster.nodes:
            with client(node.port) as conn:
                conn.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    return source


@contextlib.contextmanager
def sentinel_topology() -> Iterator[SentinelTopology]:
    binary("redis-server")
    with tempfile.TemporaryDirectory(prefix="gateway-sentinel-") as directory:
        topology = SentinelTopology(Path(directory))
        try:
            topology.start()
            yield topology
        finally:
            topology.stop()


@contextlib.contextmanager
def cluster_topology() -> Iterator[ClusterTopology]:
    binary("redis-server")
    binary("redis-cli")
    with tempfile.TemporaryDirectory(prefix="gateway-cluster-") as directory:
        topology = ClusterTopology(Path(directory))
        try:
            topology.start()
            yield topology
        finally:
            topology.stop()
