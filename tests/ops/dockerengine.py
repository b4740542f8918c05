"""A private Docker engine for the image tests, and the local base image it builds on.

Nothing here talks to a registry (none is reachable from the test machines):

- ``start_engine`` runs Debian's ``dockerd`` with its own data root, exec root, pid file and
  socket under a fresh temporary directory, without iptables or a bridge (containers use
  ``--network host``), and ``Engine.close`` stops it and removes every trace of it.
- ``debootstrap_base`` + ``import_base`` make the stand-in for ``python:3.11-slim-bookworm``:
  ``debootstrap --variant=minbase`` of bookworm with python3 and python3-venv, from the Debian
  mirror apt is configured with, the
  CA bundle pip trusts on this machine, a ``python`` link, then ``docker import`` with
  ``PIP_CERT`` set. The root filesystem is cached as a tarball (``~/.cache/gateway-image`` or
  ``$GATEWAY_IMAGE_CACHE``) under a key of everything that goes into it, so only the first run
  pays for debootstrap.
- ``pip_build_args`` hands the machine's own pip index settings (``pip config list``) to
  ``docker build`` as build args, so the build fetches packages the way this machine does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.servers import scaled

SUITE = "bookworm"
INCLUDE = ("python3", "python3-venv", "ca-certificates")
RECIPE = "2"  # bump when the steps below change what goes into the base
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
IMAGE_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
LABEL = "org.gateway.test-run"


class EngineUnavailable(Exception):
    """This machine cannot run the engine or make the base image: a skip outside CI."""


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- the engine --------------------------------------------------------------------------------


@dataclass
class Engine:
    docker_cli: str
    workdir: Path
    process: subprocess.Popen[bytes]
    run_id: str

    @property
    def host(self) -> str:
        return f"unix://{self.workdir / 'docker.sock'}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "dockerd.log"

    def env(self) -> dict[str, str]:
        # The classic builder: BuildKit would fetch the Dockerfile's `# syntax=` frontend image
        # from a registry, and the docker.io CLI has no buildx.
        return dict(os.environ, DOCKER_HOST=self.host, DOCKER_BUILDKIT="0")

    def argv(self, *args: str) -> list[str]:
        return [self.docker_cli, *args]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=scaled(timeout),
            check=False,
        )

    def ok(self, *args: str, timeout: float = 60) -> str:
        result = self.run(*args, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        return result.stdout

    def inspect(self, name: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = json.loads(self.ok("inspect", name))
        return found[0]

    def close(self) -> None:
        """Remove this run's containers, stop dockerd (TERM, then KILL after a deadline), end
        any of its children still alive, unmount what it left mounted, delete its directory."""
        try:
            if self.process.poll() is None:
                listed = self.run("ps", "-aq", "--filter", f"label={LABEL}={self.run_id}")
                ids = listed.stdout.split()
                if ids:
                    self.run("rm", "-f", *ids, timeout=60)
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=scaled(30))
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
        finally:
            kill_leftovers(self.workdir)
            unmount_under(self.workdir)
            shutil.rmtree(self.workdir, ignore_errors=True)


def processes_mentioning(path: Path) -> list[int]:
    """Pids whose command line names ``path`` (containerd and its shims, started by our
    dockerd with our exec root): only this run's processes can mention its fresh directory."""
    needle = str(path).encode()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry.name))
    return found


def kill_leftovers(path: Path) -> None:
    deadline = time.monotonic() + scaled(10)
    for _ in range(100):
        pids = processes_mentioning(path)
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def unmount_under(path: Path) -> None:
    prefix = str(path) + "/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    points = [line.split()[4] for line in lines if len(line.split()) > 4]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30, check=False)


def start_engine(docker_cli: str, dockerd: str) -> Engine:
    """dockerd on a private socket; EngineUnavailable (with its log) when it cannot start."""
    if os.geteuid() != 0:
        raise EngineUnavailable("dockerd needs root (run the tests as root)")
    workdir = Path(tempfile.mkdtemp(prefix="gw-dockerd-", dir="/tmp"))
    run_id = workdir.name
    log_path = workdir / "dockerd.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                dockerd,
                "--iptables=false",
                "--ip-masq=false",
                "--bridge=none",
                f"--data-root={workdir / 'data'}",
                f"--exec-root={workdir / 'exec'}",
                f"--pidfile={workdir / 'dockerd.pid'}",
                f"--host=unix://{workdir / 'docker.sock'}",
                "--log-level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    engine = Engine(docker_cli, workdir, process, run_id)
    deadline = time.monotonic() + scaled(60)
    try:
        for _ in range(1000):
            if process.poll() is not None:
                raise EngineUnavailable(
                    f"dockerd exited with {process.returncode}:\n{tail(log_path)}"
                )
            if (workdir / "docker.sock").exists():
                probe = engine.run("version", "--format", "{{.Server.Version}}", timeout=10)
                if probe.returncode == 0:
                    return engine
            if time.monotonic() > deadline:
                raise EngineUnavailable(f"dockerd did not answer within 60 s:\n{tail(log_path)}")
            time.sleep(0.2)
        raise EngineUnavailable("dockerd did not answer")
    except BaseException:
        engine.close()
        raise


# --- pip's settings, as build args ------------------------------------------------------------


def pip_config() -> dict[str, str]:
    """This machine's effective pip settings (``pip config list``), environment last."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    files: dict[str, str] = {}
    env: dict[str, str] = {}
    for line in result.stdout.splitlines():
        match = re.fullmatch(r"([^.=]*)\.([a-z0-9-]+)='(.*)'", line.strip())
        if not match:
            continue
        variant, key, value = match.groups()
        if variant == ":env:":
            env[key] = value
        elif variant in {"global", "install", "download"}:
            files[key] = value
    return {**files, **env}


def pip_build_args(config: dict[str, str]) -> dict[str, str]:
    """The index settings the build can use: http(s) indexes (a local ``file://`` index or a
    find-links folder of this machine does not exist inside the build), trusted hosts, the
    timeout. Nothing at all when pip uses its default index."""
    args: dict[str, str] = {}
    index = config.get("index-url", "")
    if index.startswith(("http://", "https://")):
        args["PIP_INDEX_URL"] = index
    extra = [u for u in config.get("extra-index-url", "").split() if u.startswith("http")]
    if extra:
        args["PIP_EXTRA_INDEX_URL"] = " ".join(extra)
    if config.get("trusted-host"):
        args["PIP_TRUSTED_HOST"] = config["trusted-host"]
    if config.get("timeout") or config.get("default-timeout"):
        args["PIP_DEFAULT_TIMEOUT"] = config.get("timeout") or config["default-timeout"]
    return args


def ca_bundle(config: dict[str, str]) -> Path:
    """The CA bundle pip trusts here (``cert``), else the system's."""
    for candidate in (config.get("cert"), os.environ.get("SSL_CERT_FILE")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return SYSTEM_CA_BUNDLE


# --- the base image ---------------------------------------------------------------------------


def apt_mirror(suite: str = SUITE) -> str | None:
    """The Debian archive URI apt uses (not -security, not -updates), preferring a source that
    lists ``suite``; ``$GATEWAY_DEBOOTSTRAP_MIRROR`` overrides."""
    override = os.environ.get("GATEWAY_DEBOOTSTRAP_MIRROR")
    if override:
        return override
    entries: list[tuple[list[str], list[str], list[str]]] = []  # (uris, suites, components)
    apt = Path("/etc/apt")
    one_line = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    for path in one_line:
        with contextlib.suppress(OSError):
            for raw in path.read_text().splitlines():
                words = re.sub(r"\[[^]]*\]", "", raw.split("#")[0]).split()
                if len(words) >= 4 and words[0] == "deb":
                    entries.append(([words[1]], [words[2]], words[3:]))
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        with contextlib.suppress(OSError):
            for stanza in re.split(r"\n\s*\n", path.read_text()):
                fields: dict[str, list[str]] = {}
                for raw in stanza.splitlines():
                    if raw.startswith("#") or ":" not in raw:
                        continue
                    key, _, value = raw.partition(":")
                    fields[key.strip().lower()] = value.split()
                if "deb" in fields.get("types", []) and fields.get("enabled") != ["no"]:
                    entries.append(
                        (
                            fields.get("uris", []),
                            fields.get("suites", []),
                            fields.get("components", []),
                        )
                    )
    archive = [
        (uris, suites)
        for uris, suites, components in entries
        if "main" in components and any(s.isalpha() for s in suites) and uris
    ]
    for uris, suites in archive:
        if suite in suites:
            return uris[0].rstrip("/")
    return archive[0][0][0].rstrip("/") if archive else None


def architecture() -> str:
    result = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, timeout=30, check=False
    )
    return result.stdout.strip() or "amd64"


def cache_dir() -> Path:
    configured = os.environ.get("GATEWAY_IMAGE_CACHE")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "gateway-image"


@dataclass(frozen=True)
class BaseRecipe:
    mirror: str
    ca_bundle: Path
    arch: str

    def key(self) -> str:
        inputs = {
            "recipe": RECIPE,
            "suite": SUITE,
            "variant": "minbase",
            "include": list(INCLUDE),
            "mirror": self.mirror,
            "arch": self.arch,
            "ca": hashlib.sha256(self.ca_bundle.read_bytes()).hexdigest(),
        }
        return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]

    def tarball(self) -> Path:
        return cache_dir() / f"base-{SUITE}-{self.key()}.tar"


def debootstrap_base(recipe: BaseRecipe, debootstrap: str) -> tuple[Path, bool]:
    """The cached root filesystem tarball (made now if missing) and whether it was made now."""
    target = recipe.tarball()
    if target.exists():
        return target, False
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="debootstrap-", dir=target.parent) as tmp:
        root = Path(tmp) / "root"
        log_path = Path(tmp) / "debootstrap.log"
        with log_path.open("wb") as log:
            try:
                result = subprocess.run(
                    [
                        debootstrap,
                        "--variant=minbase",
                        f"--arch={recipe.arch}",
                        f"--include={','.join(INCLUDE)}",
                        SUITE,
                        str(root),
                        recipe.mirror,
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=scaled(900),
                    check=False,
                )
            except subprocess.TimeoutExpired as error:
                raise EngineUnavailable(f"debootstrap timed out:\n{tail(log_path)}") from error
        if result.returncode != 0:
            raise EngineUnavailable(
                f"debootstrap {SUITE} from {recipe.mirror} failed ({result.returncode}):\n"
                f"{tail(log_path)}"
            )
        # Trust what pip trusts on this machine (its downloads may pass a TLS-inspecting proxy).
        shutil.copyfile(recipe.ca_bundle, root / IMAGE_CA_BUNDLE.lstrip("/"))
        python = root / "usr" / "bin" / "python"
        if not python.exists():
            python.symlink_to("python3")
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (root / leftover).glob("*"):
                if entry.is_file():
                    entry.unlink()
        partial = Path(tmp) / "base.tar"
        subprocess.run(
            ["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."],
            check=True,
            capture_output=True,
            timeout=scaled(300),
        )
        os.replace(partial, target)  # atomic: a concurrent run sees a whole tarball or none
    return target, True


def import_base(engine: Engine, tarball: Path, tag: str) -> None:
    engine.ok(
        "import",
        "--change",
        f"ENV PIP_CERT={IMAGE_CA_BUNDLE}",
        "--change",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change",
        "ENV LANG=C.UTF-8",
        "--change",
        'CMD ["python3"]',
        str(tarball),
        tag,
        timeout=300,
    )


@contextlib.contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        timings[name] = round(time.monotonic() - start, 1)
