"""Smoke test of loadtest/locustfile.py: a short headless run against a real gateway.

Asserts behaviour (users connect, messages come back, CSV and the HTML report written, the exit
code follows the thresholds given on the command line), never speed.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import start_gateway
from tests.support.skips import IN_CI

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = REPO / "loadtest" / "locustfile.py"
LOCUST = Path(sys.executable).with_name("locust")

pytestmark = pytest.mark.skipif(
    not LOCUST.exists() and not IN_CI,
    reason="locust not installed (pip install -e '.[load]')",
)


def run_locust(
    base_url: str,
    csv_prefix: Path,
    seconds: int,
    *extra: str,
    env: dict[str, str] | None = None,
) -> tuple[int, str]:
    cmd = [
        str(LOCUST),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        "4",
        "-r",
        "4",
        "-t",
        f"{seconds}s",
        "--host",
        base_url,
        "--csv",
        str(csv_prefix),
        "--only-summary",
        "--stop-timeout",
        "2",
        *extra,
    ]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    done = subprocess.run(
        cmd,
        cwd=REPO,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=seconds + 20,
    )
    return done.returncode, done.stdout + done.stderr


def stats_rows(csv_prefix: Path) -> dict[str, dict[str, str]]:
    with Path(f"{csv_prefix}_stats.csv").open(newline="") as fh:
        return {row["Name"]: row for row in csv.DictReader(fh)}


def test_headless_run_delivers_and_writes_csv_and_html(tmp_path: Path) -> None:
    """As the documented command: --csv and --html into a results folder that does not exist
    yet (a fresh clone has no loadtest/results/)."""
    results = tmp_path / "results"
    with start_gateway(env={"GATEWAY_RATE_LIMIT": "0"}) as gw:
        code, output = run_locust(
            gw.base_url,
            results / "locust",
            6,
            "--msg-rate",
            "2",
            "--max-p99-ms",
            "10000",
            "--max-error-ratio",
            "0.5",
            "--html",
            str(results / "locust.html"),
        )
    assert code == 0, output
    rows = stats_rows(results / "locust")
    assert int(rows["connect"]["Request Count"]) >= 4, rows
    assert int(rows["message rtt"]["Request Count"]) > 0, rows
    assert int(rows["delivery"]["Request Count"]) > 0, rows
    assert int(rows["Aggregated"]["Failure Count"]) == 0, rows
    report = (results / "locust.html").read_text()
    assert report.lstrip().lower().startswith("<!doctype html>"), report[:200]
    for name in ("connect", "message rtt", "delivery"):
        assert f'"name": "{name}"' in report, f"{name} missing from the HTML report"


def test_exit_code_follows_thresholds(tmp_path: Path) -> None:
    # A tight rate limit makes error frames; an impossible p99 bound breaks too.
    with start_gateway(env={"GATEWAY_RATE_LIMIT": "2/60"}) as gw:
        code, output = run_locust(
            gw.base_url,
            tmp_path / "bad",
            4,
            "--msg-rate",
            "4",
            "--max-p99-ms",
            "0.0001",
            "--max-error-ratio",
            "0.01",
        )
    assert code == 1, output
    assert "threshold broken: p99 of" in output, output
    assert "threshold broken: error ratio" in output, output
    rows = stats_rows(tmp_path / "bad")
    assert int(rows["error frame"]["Failure Count"]) > 0, rows


def test_users_renew_short_tokens_and_count_presence_events(tmp_path: Path) -> None:
    """Auth on with no leeway: a user whose token ran out would be closed (1008, a failure).
    Tokens live 2 to 3 s and the run 8 s, so every user renews several times on one connection.
    Four users in a room whose names limit is 2 get `count` presence events: counted as presence,
    left out of the error ratio, and nothing fails."""
    secret = "locust-smoke-secret-of-at-least-32-bytes"
    server_env = {
        "GATEWAY_RATE_LIMIT": "0",
        "GATEWAY_AUTH_SECRET": secret,
        "GATEWAY_AUTH_LEEWAY": "0",
        "GATEWAY_PRESENCE_NAMES_MAX": "2",
        "GATEWAY_PRESENCE_BATCH_MS": "100",
    }
    with start_gateway(env=server_env) as gw:
        code, output = run_locust(
            gw.base_url,
            tmp_path / "auth",
            8,
            "--msg-rate",
            "1",
            "--token-ttl",
            "3",
            "--max-error-ratio",
            "0",
            env={"LOCUST_TOKEN_SECRET": secret},
        )
    assert code == 0, output
    rows = stats_rows(tmp_path / "auth")
    assert int(rows["Aggregated"]["Failure Count"]) == 0, rows
    assert int(rows["connect"]["Request Count"]) == 4, rows  # nobody had to reconnect
    assert int(rows["token refresh"]["Request Count"]) >= 8, rows
    assert int(rows["message rtt"]["Request Count"]) > 0, rows
    assert int(rows["presence count"]["Request Count"]) > 0, rows
    assert int(rows["presence joined"]["Request Count"]) > 0, rows
