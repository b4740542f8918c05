"""A real app backend for hook tests: a Starlette app under uvicorn, as a subprocess on a free
loopback port. It verifies each request's signature, records it, and answers by rules a test
sets through its control endpoint (``POST /_rules``), per event:

* ``{"action": "allow"}`` (optionally ``"rooms"``, ``"text"``, ``"reason"``), ``{"action": "deny",
  "reason": …}``: a verdict;
* ``{"action": "hang"}``: never answers (until the backend stops);
* ``{"action": "raw", "status": 500, "body": "…"}``: exactly that answer (garbage, errors);
* ``{"action": "huge"}``: a valid-looking JSON answer of 1 MiB.

``GET /_requests`` lists what was received: event, JSON body, ``traceparent``, signature check.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.servers import free_port, scaled, wait_until

SECRET = "s" * 16 + "backend-secret-of-32-bytes+"


def create_app(secret: str) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    rules: dict[str, dict[str, Any]] = {}
    received: list[dict[str, Any]] = []

    async def hook(request: Request) -> Response:
        event = request.path_params["event"]
        raw = await request.body()
        expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        signature = request.headers.get("x-gateway-signature", "")
        received.append(
            {
                "event": event,
                "body": json.loads(raw),
                "traceparent": request.headers.get("traceparent"),
                "signature_ok": hmac.compare_digest(expected, signature),
            }
        )
        if not hmac.compare_digest(expected, signature):
            return JSONResponse({"detail": "bad signature"}, status_code=401)
        return await answer(rules.get(event, {"action": "allow"}))

    async def answer(rule: dict[str, Any]) -> Response:
        action = rule.get("action", "allow")
        if action == "hang":
            await asyncio.sleep(3600)
        if action == "raw":
            return Response(rule.get("body", ""), status_code=int(rule.get("status", 200)))
        if action == "huge":
            return JSONResponse({"allow": True, "padding": "x" * (1 << 20)})
        verdict: dict[str, Any] = {"allow": action == "allow"}
        for key in ("reason", "rooms", "text"):
            if key in rule:
                verdict[key] = rule[key]
        return JSONResponse(verdict)

    async def set_rules(request: Request) -> Response:
        rules.clear()
        rules.update(await request.json())
        return JSONResponse({"ok": True})

    async def requests(request: Request) -> Response:
        return JSONResponse(received)

    async def reset(request: Request) -> Response:
        received.clear()
        rules.clear()
        return JSONResponse({"ok": True})

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/_rules", set_rules, methods=["POST"]),
            Route("/_requests", requests),
            Route("/_reset", reset, methods=["POST"]),
            Route("/_health", health),
            Route("/{event}", hook, methods=["POST"]),
        ]
    )


class Backend:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.url = f"http://127.0.0.1:{port}"

    def rules(self, **rules: dict[str, Any]) -> None:
        httpx.post(self.url + "/_rules", json=rules, timeout=scaled(5)).raise_for_status()

    def reset(self) -> None:
        httpx.post(self.url + "/_reset", timeout=scaled(5)).raise_for_status()

    def requests(self, event: str | None = None) -> list[dict[str, Any]]:
        seen = httpx.get(self.url + "/_requests", timeout=scaled(5)).json()
        return [r for r in seen if event is None or r["event"] == event]

    def wait_requests(self, event: str, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        wait_until(
            lambda: len(self.requests(event)) >= count,
            timeout,
            f"{count} {event} requests at the backend",
        )
        return self.requests(event)

    def gateway_env(self, **settings: str) -> dict[str, str]:
        env = {"GATEWAY_HOOK_URL": self.url, "GATEWAY_HOOK_SECRET": SECRET}
        env.update({f"GATEWAY_{key.upper()}": value for key, value in settings.items()})
        return env


@contextlib.contextmanager
def start_backend(secret: str = SECRET) -> Iterator[Backend]:
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="backend-", suffix=".log")[1])
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.backend", str(port), secret],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
            start_new_session=True,
        )
    backend = Backend(process, port, log)

    def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"backend exited: {log.read_text()}")
        try:
            return httpx.get(backend.url + "/_health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, 20, "the test backend to answer")
        yield backend
    finally:
        process.terminate()
        try:
            process.wait(timeout=scaled(10))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(
        create_app(sys.argv[2]),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        timeout_graceful_shutdown=1,
    )
