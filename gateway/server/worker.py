"""The gateway's gunicorn worker: ``uvicorn-worker`` with the gateway's uvicorn settings.

gunicorn builds a worker object in the master and forks; everything that must not cross the
fork (the app, its Redis connections, exporters, the event loop) is made in ``run()`` in the
child. This module is imported by the master (``worker_class``), so it imports nothing that
creates state at import: no metrics, no app, no lifecycle.
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
from gunicorn.arbiter import Arbiter
from uvicorn_worker import UvicornWorker

from gateway.settings import load_settings

SHUTDOWN_MARGIN = 1.0
"""Seconds of gunicorn's graceful timeout kept for the lifespan shutdown (backends' close)."""


class GatewayWorker(UvicornWorker):  # type: ignore[misc]  # uvicorn-worker is untyped
    """Runs the gateway like ``gateway serve`` does: the gateway's WebSocket protocol class,
    heartbeat ping interval/timeout, frame size limit and no permessage-deflate."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from gateway.server.options import uvicorn_options

        settings = load_settings()
        self.CONFIG_KWARGS = uvicorn_options(settings)
        super().__init__(*args, **kwargs)
        # What uvicorn may wait for connections after the drain, within gunicorn's graceful
        # timeout (the master kills the worker when that runs out).
        graceful = float(self.cfg.graceful_timeout)
        reserve = max(graceful - settings.drain_timeout - SHUTDOWN_MARGIN, 1.0)
        self.config.timeout_graceful_shutdown = reserve

    def server(self, config: uvicorn.Config) -> uvicorn.Server:
        """The uvicorn server of this worker, built in the child after the fork.

        This is where a worker's stop is shaped: SIGTERM from the master (stop, HUP reload,
        scale down) and SIGINT reach ``Server.handle_exit``, then ``Server.shutdown`` runs in
        the worker's event loop while every connection is still open. The graceful drain of
        :mod:`gateway.drain` hooks in there, before uvicorn's own bare 1012 to every
        WebSocket.
        """
        from gateway.server.uvicorn_server import DrainingServer

        return DrainingServer(config)

    async def _serve(self) -> None:
        # uvicorn_worker.UvicornWorker._serve with the server chosen by ``server()``.
        self.config.app = self.wsgi
        server = self.server(self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
