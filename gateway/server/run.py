"""How ``gateway serve`` runs: one uvicorn process, or a gunicorn master with its workers."""

from __future__ import annotations

import os
import sys

from gateway.settings import Settings


def serve_single(settings: Settings) -> int:
    """Metrics read ``PROMETHEUS_MULTIPROC_DIR`` when first imported: it is forgotten before."""
    from gateway import logs, multiproc

    multiproc.forget()
    logs.configure(settings.log_level, settings.log_format)

    import uvicorn

    from gateway.server.app import create_app
    from gateway.server.options import uvicorn_options
    from gateway.server.uvicorn_server import DrainingServer
    from gateway.tracing import TracingConfigError

    try:
        app = create_app(settings)
    except TracingConfigError as error:
        print(f"gateway: invalid setting: {error}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, **uvicorn_options(settings)
    )
    DrainingServer(config).run()
    return 0


def serve_workers(settings: Settings, workers: int) -> int:
    """Become the gunicorn master (exec, same pid): signals from a terminal, a supervisor or a
    test reach it directly, and nothing this process imported crosses into the fleet.

    The fleet reads everything from the environment (``gateway.server.gunicorn_conf``, then each
    worker's settings), so the command line's choices travel there.
    """
    env = {
        **os.environ,
        "GATEWAY_HOST": settings.host,
        "GATEWAY_PORT": str(settings.port),
        "GATEWAY_WORKERS": str(workers),
    }
    argv = [sys.executable, "-m", "gunicorn", "--config", "python:gateway.server.gunicorn_conf"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [*argv, "gateway.app:app"], env)
