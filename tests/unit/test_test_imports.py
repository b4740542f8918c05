"""No test module imports another: what tests share lives in support modules (tests/support/,
or a suite's own helpers such as tests/drain/support.py), so running, moving or deleting one
test module never changes another."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(TESTS.parent).with_suffix("").parts)


def imported(tree: ast.AST, module: str) -> Iterator[tuple[int, str]]:
    """Every module (or name of a package) an import statement names, with its line; relative
    imports are resolved against ``module``."""
    package = module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            yield node.lineno, base
            if base == "tests" or base.startswith("tests."):
                for alias in node.names:
                    yield node.lineno, f"{base}.{alias.name}"


def imports_of_test_modules(source: str, module: str) -> list[str]:
    """The imports of test modules in ``source`` (the code of ``module``), one per statement."""
    found: dict[tuple[int, str], None] = {}
    for line, name in imported(ast.parse(source), module):
        parts = name.split(".")
        if parts[0] != "tests":
            continue
        for depth, part in enumerate(parts):
            if part.startswith("test_"):
                found[line, ".".join(parts[: depth + 1])] = None
                break
    return [f"line {line}: {name}" for line, name in found]


def test_no_test_module_imports_a_test_module() -> None:
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        for problem in imports_of_test_modules(path.read_text(), module_name(path)):
            found.append(f"{path.relative_to(TESTS.parent)} {problem}")
    assert not found, "move what they share into a support module:\n" + "\n".join(found)


def test_the_check_sees_every_form_of_such_an_import() -> None:
    module = "tests.redis.test_x"
    caught = [
        "from tests.contract.test_backends import Inbox",
        "import tests.contract.test_backends",
        "from tests.ops import test_ops_kubernetes",
        "from .test_worker_drain import publish",
        "from ..contract.test_backends import message",
        "if True:\n    from tests.unit.test_hub import Client",
    ]
    for source in caught:
        assert imports_of_test_modules(source, module), source
    fine = [
        "from tests.support.clients import open_ws",
        "from tests.redis.fleet import ROOM",
        "from .fleet import ROOM",
        "import pytest",
    ]
    for source in fine:
        assert not imports_of_test_modules(source, module), source
