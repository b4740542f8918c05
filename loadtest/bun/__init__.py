"""Bun's pub/sub as the benchmark's reference server, and the Bun binary it runs on.

Bun comes from the npm registry (the package ``bun`` pinned in package.json here, with its
package-lock.json), installed on first use into a cache outside the repository
(``$GATEWAY_BENCH_CACHE/bun``, default ``~/.cache/gateway-bench/bun``) with ``npm ci``, and
reused while it matches the lock file. Install scripts are not run (``--ignore-scripts``): the
``bun`` package's postinstall only moves the platform package's binary into place, and
the benchmark runs that binary (``@oven/bun-<platform>/bin/bun``) where it lies.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVER_SCRIPT = HERE / "server.ts"
MANIFESTS = ("package.json", "package-lock.json")


class BunUnavailable(RuntimeError):
    """Bun cannot be installed or run here; the message says what is missing."""


def pinned_version() -> str:
    manifest = json.loads((HERE / "package.json").read_text())
    version: str = manifest["dependencies"]["bun"]
    return version


def cache_dir() -> Path:
    root = os.environ.get("GATEWAY_BENCH_CACHE")
    if root:
        return Path(root) / "bun"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "gateway-bench" / "bun"


def bun_binary(cache: Path | None = None) -> Path:
    """The pinned Bun, installed first if the cache does not hold it (or holds another)."""
    where = cache or cache_dir()
    where.mkdir(parents=True, exist_ok=True)
    with _locked(where / ".install.lock"):
        found = _installed(where)
        if found is not None:
            return found
        _install(where)
        found = _installed(where)
    if found is None:
        raise BunUnavailable(
            f"npm ci in {where} installed no runnable bun {pinned_version()} "
            f"(platform packages found: {_candidates(where) or 'none'})"
        )
    return found


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One install at a time per cache (two benchmark or test processes may start together)."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _candidates(cache: Path) -> list[Path]:
    return sorted((cache / "node_modules" / "@oven").glob("bun-*/bin/bun"))


def _installed(cache: Path) -> Path | None:
    """The cached binary, if the cache was installed from this lock file and it runs."""
    for name in MANIFESTS:
        ours, theirs = HERE / name, cache / name
        if not theirs.exists() or theirs.read_bytes() != ours.read_bytes():
            return None
    for binary in _candidates(cache):
        try:
            done = subprocess.run(
                [str(binary), "--version"], capture_output=True, text=True, timeout=30
            )
        except OSError:
            continue
        if done.returncode == 0 and done.stdout.strip() == pinned_version():
            return binary
    return None


def _install(cache: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise BunUnavailable(
            "npm is not installed: the Bun reference server comes from the npm registry "
            "(install Node.js and npm, e.g. `apt-get install npm`)"
        )
    for name in MANIFESTS:
        shutil.copyfile(HERE / name, cache / name)
    cmd = [npm, "ci", "--prefix", str(cache), "--ignore-scripts", "--no-audit", "--no-fund"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as exc:
        raise BunUnavailable(f"{' '.join(cmd)} took over 600 s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise BunUnavailable(f"{' '.join(cmd)} failed ({done.returncode}):\n{tail}")
