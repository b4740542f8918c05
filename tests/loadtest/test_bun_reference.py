"""The Bun reference server (loadtest/bun/): installed from the npm registry on demand, it speaks
the seed's frames, and the benchmark measures it like the others. Without npm the tests skip
saying so (CI has npm: there they fail instead)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import websocket

from loadtest.bun import BunUnavailable, bun_binary
from loadtest.servers import Server, start_bun
from tests.support.bench import run_bench
from tests.support.skips import unavailable


@pytest.fixture(scope="module")
def installed() -> Path:
    try:
        return bun_binary()
    except BunUnavailable as error:
        unavailable(str(error), "CI has npm and reaches the npm registry")


@pytest.fixture
def bun(installed: Path) -> Iterator[Server]:
    server = start_bun(core=None, label="bun-test")
    try:
        yield server
    finally:
        server.stop()


def test_without_npm_the_benchmark_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_BENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BunUnavailable, match="npm is not installed"):
        bun_binary()


def test_it_speaks_the_seeds_frames(bun: Server) -> None:
    url = f"ws://{bun.host}:{bun.port}"
    alice = websocket.create_connection(f"{url}/ws/alice", timeout=5)
    bob = websocket.create_connection(f"{url}/ws/bob", timeout=5)
    try:
        assert alice.recv() == "alice joined the chat"
        assert alice.recv() == bob.recv() == "bob joined the chat"
        bob.send("hello")
        assert alice.recv() == bob.recv() == "bob: hello"  # the sender hears itself, as in the seed
        bob.close()
        assert alice.recv() == "bob left the chat"
    finally:
        alice.close()
        bob.close()


def test_the_benchmark_measures_it_like_the_seed(installed: Path, tmp_path: Path) -> None:
    out = tmp_path / "bun.json"
    data = run_bench(
        "--scenario", "fanout", "--target", "bun",
        "--no-pin", "-N", "10", "-P", "2", "--rate", "max", "--duration", "1",
        "--warmup", "0.2", "--repeat", "1", "--json", str(out),
    )  # fmt: skip
    result = data["results"]["bun-fanout"]
    assert result["connections"] == 12
    assert result["recipients"] == 12  # every connection, the sender included
    assert result["delivered_ratio"] >= 0.99
    assert result["server_cpu_s"] > 0  # the closed loop keeps it busy for the whole second
    assert result["processes"] == 1
