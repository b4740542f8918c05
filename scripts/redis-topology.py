#!/usr/bin/env python3
"""Start a Redis topology on free loopback ports and keep it until Ctrl-C (or SIGTERM).

    scripts/redis-topology.py sentinel   # 1 primary + 2 replicas + 3 sentinels
    scripts/redis-topology.py cluster    # 3 masters

Prints the gateway's GATEWAY_BROKER_URL for it, then the ports and the process ids (to kill,
freeze or restart by hand), and tears everything down cleanly on exit. The code is the tests'
own (tests/support/topology.py), so what a person tries here is what the tests run.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.topology import (
    MissingBinary,
    Topology,
    cluster_topology,
    sentinel_topology,
)


def show(topology: Topology, url: str) -> None:
    print(f"GATEWAY_BROKER_URL={url}")
    for node in topology.nodes:
        pid = node.process.pid if node.process else "-"
        print(f"  {node.name:<10} 127.0.0.1:{node.port}  pid {pid}")
    print(f"  files in {topology.directory}; Ctrl-C to stop", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["sentinel", "cluster"])
    options = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if options.kind == "sentinel":
            with sentinel_topology() as sentinel:
                show(sentinel, sentinel.url())
                _wait(stop)
        else:
            with cluster_topology() as cluster:
                show(cluster, cluster.url())
                _wait(stop)
    except MissingBinary as error:
        print(f"redis-topology: {error}", file=sys.stderr)
        return 1
    return 0


def _wait(stop: threading.Event) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()


if __name__ == "__main__":
    sys.exit(main())
