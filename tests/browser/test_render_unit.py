"""Runs the chat page's JavaScript unit tests (render.test.mjs) under Node's built-in runner."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.skips import unavailable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def test_page_rendering_and_protocol_units() -> None:
    node = shutil.which("node")
    if node is None:
        unavailable(
            "node is not installed: the page's JavaScript unit tests cannot run",
            "CI must run them",
        )
    result = subprocess.run(
        [node, "--test", str(HERE / "render.test.mjs")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"node --test failed:\n{output}"
    assert "# fail 0" in output, output
