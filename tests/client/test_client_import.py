"""``gateway.client`` imports with nothing of the server installed: a bot's environment needs
the standard library and ``websockets`` only. Proven in a fresh interpreter whose import system
refuses every server dependency, then by listing what got imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.servers import scaled

REPO = Path(__file__).resolve().parents[2]
SERVER_DEPENDENCIES = (
    "starlette",
    "fastapi",
    "fastapi_offline",
    "uvicorn",
    "uvicorn_worker",
    "gunicorn",
    "redis",
    "prometheus_client",
    "opentelemetry",
    "pydantic",
    "pydantic_settings",
    "jwt",
    "limits",
    "disarm",
    "httpx",
)

PROGRAM = """
import importlib.abc, json, sys

BLOCKED = set(sys.argv[1].split(","))

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{name} is a server dependency")
        return None

sys.meta_path.insert(0, Refuse())
import gateway.client
from gateway.client import *
from gateway.client import Client, backoff_delay
Client("ws://127.0.0.1:1", "bot")
backoff_delay(3)
third_party = sorted(
    {name.partition(".")[0] for name in sys.modules}
    - set(sys.stdlib_module_names) - {"__main__", "_distutils_hack", "sitecustomize"}
    - {name for name in sys.modules if name.startswith("__editable__")}
)
gateway = sorted(name for name in sys.modules if name.startswith("gateway"))
print(json.dumps({"third_party": third_party, "gateway": gateway}))
"""


def test_the_client_imports_without_the_server_dependencies() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM, ",".join(SERVER_DEPENDENCIES)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=scaled(60),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["third_party"] == ["gateway", "websockets"]
    assert all(name == "gateway" or name.startswith("gateway.client") for name in loaded["gateway"])


def test_the_refusal_bites() -> None:
    """The same interpreter set-up does refuse a server module (the test above is no accident)."""
    program = PROGRAM.replace("import gateway.client\n", "import gateway.settings\n", 1)
    result = subprocess.run(
        [sys.executable, "-c", program, ",".join(SERVER_DEPENDENCIES)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=scaled(60),
        check=False,
    )
    assert result.returncode != 0
    assert "is a server dependency" in result.stderr
