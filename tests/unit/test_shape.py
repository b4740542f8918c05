"""The package's shape, enforced: one server layer, no import cycles, functions a reader can hold.

The banned-api rule lives in ``pyproject.toml`` (ruff's ``TID251``) and runs with ``ruff check``
in ``scripts/test``; the first test proves it catches a violation rather than trusting it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "gateway"
FRAMEWORKS = ("starlette", "fastapi", "uvicorn", "gunicorn", "uvicorn_worker")
SERVER_ENTRY_POINTS = {"gateway.app", "gateway.cli"}
"""Outside the server layer, only these may reach into it: ``gateway.app:app`` (the SPEC's
name for the ASGI app) and the command line, which picks a server to run."""
MAX_FUNCTION_LINES = 60


@pytest.mark.parametrize(
    "statement",
    [
        "import starlette",
        "from starlette.websockets import WebSocket",
        "from fastapi import FastAPI",
        "import uvicorn.config",
        "from gunicorn.arbiter import Arbiter",
        "from uvicorn_worker import UvicornWorker",
    ],
)
def test_the_lint_fails_a_framework_import_outside_the_server_layer(statement: str) -> None:
    def lint(path: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--no-cache", "--stdin-filename", path, "-"],
            input=f"{statement}\n",
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
            check=False,
        )

    core = lint("gateway/violation.py")
    assert core.returncode == 1, core.stdout + core.stderr
    assert "TID251" in core.stdout, core.stdout
    server = lint("gateway/server/allowed.py")
    assert "TID251" not in server.stdout, server.stdout


def test_the_gunicorn_master_does_not_import_prometheus_client() -> None:
    """gunicorn builds each worker's class in the master before the fork, and its ``__init__``
    reads the uvicorn options, hence the WebSocket protocol: a prometheus_client imported
    there, before multiprocess mode is set up, kept the workers' gauges out of the exposition
    (``gateway_broker_up`` read 0 with Redis up)."""
    master = "gateway.server.gunicorn_conf, gateway.server.worker, gateway.server.options"
    code = f"import sys, {master}; print(sorted(m for m in sys.modules if 'prometheus' in m))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_only_the_server_layer_imports_the_frameworks() -> None:
    graph = grimp.build_graph("gateway", include_external_packages=True)
    offenders = {
        (importer, framework)
        for framework in FRAMEWORKS
        if framework in graph.modules
        for importer in graph.find_modules_that_directly_import(framework)
        if not importer.startswith("gateway.server")
    }
    assert offenders == set()


def test_the_core_reaches_the_server_layer_only_through_its_entry_points() -> None:
    graph = grimp.build_graph("gateway")
    server = {"gateway.server", *graph.find_descendants("gateway.server")}
    importers = {
        importer
        for module in server
        for importer in graph.find_modules_that_directly_import(module)
        if importer not in server
    }
    assert importers <= SERVER_ENTRY_POINTS, importers - SERVER_ENTRY_POINTS


def test_there_is_no_import_cycle_not_even_a_type_only_one() -> None:
    graph = grimp.build_graph("gateway", exclude_type_checking_imports=False)
    cycles = [
        graph.find_shortest_chain(imported, importer)
        for importer in sorted(graph.modules)
        for imported in sorted(graph.find_modules_directly_imported_by(importer))
        if graph.find_shortest_chain(imported, importer) is not None
    ]
    assert cycles == []


def test_no_function_in_the_package_is_longer_than_a_screen() -> None:
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} {lines}")
    assert long == []
