"""The image, built and run for real in a Docker engine (marker ``docker``).

A private ``dockerd`` (tests/ops/dockerengine.py) builds the Dockerfile on a local stand-in for
``python:3.11-slim-bookworm`` (debootstrap, cached), with pip reaching its index the way this
machine's pip does. The container runs as docs/deploy.md says (``--read-only --tmpfs /tmp``, on
``--network host`` bound to a free loopback port): its HEALTHCHECK turns healthy, its processes
run as uid 10001, two WebSocket clients chat through it, and ``docker stop`` drains them (a
``reconnect`` hint, then close 1012) before the container exits 0.

Without a Docker engine, debootstrap or root the tests skip and say why (``bash
scripts/install-docker.sh`` installs the tools); with CI=true they fail instead.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

import pytest
from packaging.utils import canonicalize_name

from tests.ops import dockerengine
from tests.ops.dockerengine import Engine, EngineUnavailable
from tests.ops.support import ROOT, find_tool, lock_tool
from tests.support.clients import of_type, open_ws, recv_until, wait_closed
from tests.support.servers import free_port, scaled
from tests.support.skips import IN_CI

pytestmark = [pytest.mark.docker, pytest.mark.timeout(int(scaled(900)))]

IMAGE_UID = 10001
INSTALL_HINT = "bash scripts/install-docker.sh (Debian packages docker.io and debootstrap)"


def unavailable(reason: str) -> NoReturn:
    message = f"no Docker engine for the image tests: {reason}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Built:
    engine: Engine
    image: str
    timings: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    tools = {name: find_tool(name) for name in ("docker", "dockerd", "debootstrap")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        unavailable(f"{', '.join(missing)} not installed: {INSTALL_HINT}")
    docker, dockerd = tools["docker"], tools["dockerd"]
    assert docker is not None
    assert dockerd is not None
    try:
        started = dockerengine.start_engine(docker, dockerd)
    except EngineUnavailable as error:
        unavailable(str(error))
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(scope="module")
def built(engine: Engine) -> Built:
    """The base imported from its cached tarball (debootstrap on a cache miss), then the
    Dockerfile built on it with this machine's pip index settings."""
    timings: dict[str, float] = {}
    debootstrap = find_tool("debootstrap")
    assert debootstrap is not None
    config = dockerengine.pip_config()
    mirror = dockerengine.apt_mirror()
    if mirror is None:
        unavailable("no Debian archive in apt's sources; set GATEWAY_DEBOOTSTRAP_MIRROR")
    recipe = dockerengine.BaseRecipe(
        mirror, dockerengine.ca_bundle(config), dockerengine.architecture()
    )
    try:
        with dockerengine.timed(timings, "base (debootstrap or cache)"):
            tarball, made = dockerengine.debootstrap_base(recipe, debootstrap)
    except EngineUnavailable as error:
        unavailable(str(error))
    base = f"gateway-test-base:{recipe.key()}"
    with dockerengine.timed(timings, "docker import"):
        dockerengine.import_base(engine, tarball, base)
    image = f"gateway-test:{engine.run_id.lower()}"
    build_args = [f"--build-arg=PYTHON_IMAGE={base}"] + [
        f"--build-arg={key}={value}" for key, value in dockerengine.pip_build_args(config).items()
    ]
    with dockerengine.timed(timings, "docker build"):
        engine.ok(
            "build",
            "--network=host",
            f"--label={dockerengine.LABEL}={engine.run_id}",
            *build_args,
            "-t",
            image,
            str(ROOT),
            timeout=900,
        )
    base_from = "debootstrap (cache miss)" if made else f"cache {tarball}"
    print(f"base from {base_from}; timings (s): {json.dumps(timings)}", file=sys.stderr)
    return Built(engine, image, timings)


def test_the_image_holds_exactly_the_locked_dependencies(built: Built) -> None:
    """What pip installed in the image is the lock's pins for the image's own Python and
    machine (evaluated there), plus the project; nothing resolved at build time."""
    script = (
        "import importlib.metadata as m, json, platform, sys;"
        "print(json.dumps({'dists': {d.metadata['Name']: d.version for d in m.distributions()},"
        "'python': platform.python_version(), 'machine': platform.machine()}))"
    )
    out = built.engine.ok(
        "run",
        "--rm",
        "--network=none",
        "--read-only",
        f"--label={dockerengine.LABEL}={built.engine.run_id}",
        "--entrypoint",
        "python",
        built.image,
        "-c",
        script,
    )
    found = json.loads(out)
    installed: dict[str, str] = {canonicalize_name(k): v for k, v in found["dists"].items()}
    lock = lock_tool()
    environment = lock.TARGETS[0] | {
        "platform_machine": found["machine"],
        "python_full_version": found["python"],
        "python_version": ".".join(found["python"].split(".")[:2]),
        "implementation_version": found["python"],
    }
    _, pins = lock.parse_lock((ROOT / "requirements.lock").read_text(), "gateway")
    expected = {pin.name: pin.version for pin in pins if pin.applies(environment)}
    assert installed.pop("gateway") == "0.1.0"
    # The virtualenv's own installers (python3-venv's ensurepip) are not dependencies.
    for tool in ("pip", "setuptools", "wheel"):
        installed.pop(tool, None)
    assert installed == expected


async def docker(engine: Engine, *args: str, timeout: float = 60) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *engine.argv(*args),
        env=engine.env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(scaled(timeout)):
            out, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return int(process.returncode or 0), out.decode(errors="replace")


async def wait_healthy(engine: Engine, name: str, timeout: float) -> dict[str, Any]:
    """Poll ``docker inspect`` until the HEALTHCHECK reports healthy (interval 10 s, so the
    first check runs about 10 s after the start)."""
    deadline = time.monotonic() + scaled(timeout)
    state: dict[str, Any] = {}
    for _ in range(int(scaled(timeout) / 0.5) + 2):
        code, out = await docker(engine, "inspect", "--format", "{{json .State}}", name)
        assert code == 0, out
        state = json.loads(out)
        if not state.get("Running"):
            _, logs = await docker(engine, "logs", name)
            raise AssertionError(f"the container stopped: {state}\n{logs[-4000:]}")
        status = state.get("Health", {}).get("Status")
        if status == "healthy":
            return state
        assert status != "unhealthy", state["Health"]
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    raise AssertionError(f"not healthy after {scaled(timeout)} s: {state.get('Health')}")


def process_uids(engine: Engine, name: str, pid: int) -> tuple[set[int], list[str]]:
    """Real, effective, saved and filesystem uids of the container's PID 1, read by the
    kernel (/proc), and the uid column of every process in it (``docker top``)."""
    status = f"/proc/{pid}/status"
    with open(status) as handle:
        uid_line = next(line for line in handle if line.startswith("Uid:"))
    uids = {int(u) for u in uid_line.split()[1:]}
    rows = engine.ok("top", name, "-o", "pid,uid,args").splitlines()[1:]
    return uids, rows


async def test_the_container_chats_reports_healthy_and_drains_on_docker_stop(
    built: Built,
) -> None:
    engine = built.engine
    port = free_port()
    name = f"gateway-{engine.run_id.lower()}"
    code, out = await docker(
        engine,
        "run",
        "-d",
        "--name",
        name,
        f"--label={dockerengine.LABEL}={engine.run_id}",
        "--network=host",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "-e",
        "GATEWAY_HOST=127.0.0.1",
        "-e",
        f"GATEWAY_PORT={port}",
        built.image,
    )
    assert code == 0, out

    # Healthy by its own HEALTHCHECK, run by the engine.
    state = await wait_healthy(engine, name, timeout=60)
    config: dict[str, Any] = engine.inspect(name)["Config"]
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"

    # Every process runs as uid 10001, on a read-only root.
    uids, rows = process_uids(engine, name, int(state["Pid"]))
    assert uids == {IMAGE_UID}
    assert rows, "docker top listed no process"
    assert all(row.split()[1] == str(IMAGE_UID) for row in rows), rows
    assert any("gunicorn" in row for row in rows), rows
    code, out = await docker(engine, "exec", name, "python", "-c", "open('/app/probe', 'w')")
    assert code != 0
    assert "Read-only file system" in out

    # Chat through it: a join notice and a message both ways.
    base = f"ws://127.0.0.1:{port}"
    bob = await open_ws(f"{base}/ws/docker-bob")
    await recv_until(bob, of_type("joined", room="lobby"))
    alice = await open_ws(f"{base}/ws/docker-alice")
    await recv_until(alice, of_type("joined", room="lobby"))
    notice, _ = await recv_until(bob, of_type("presence", room="lobby", user="docker-alice"))
    assert notice["event"] == "joined"
    await alice.send(json.dumps({"type": "message", "room": "lobby", "text": "hello from alice"}))
    for ws in (alice, bob):
        event, _ = await recv_until(ws, of_type("message", text="hello from alice"))
        assert event["from"] == "docker-alice"
    await bob.send(json.dumps({"type": "message", "room": "lobby", "text": "hi alice"}))
    await recv_until(alice, of_type("message", text="hi alice"))

    # docker stop: SIGTERM reaches gunicorn (PID 1), which drains both connections.
    stop = asyncio.create_task(docker(engine, "stop", "-t", "45", name, timeout=90))
    for ws in (alice, bob):
        hint, _ = await recv_until(ws, of_type("reconnect"), timeout=30)
        assert isinstance(hint["after_ms"], int)
        assert hint["after_ms"] >= 0
        close_code, _ = await wait_closed(ws, timeout=30)
        assert close_code == 1012
    code, out = await stop
    assert code == 0, out
    final: dict[str, Any] = engine.inspect(name)["State"]
    assert final["Running"] is False
    assert final["ExitCode"] == 0, final
    assert final["OOMKilled"] is False
    _, logs = await docker(engine, "logs", name)
    assert "Traceback" not in logs, logs[-4000:]
    await docker(engine, "rm", name)
