"""The gunicorn master's side of Prometheus multiprocess mode (hooks in ``gunicorn_conf``).

This module must not import prometheus_client at import time: the library chooses between
in-memory and file-backed values when it is first imported, so ``PROMETHEUS_MULTIPROC_DIR`` has
to be in the environment before any process of the fleet imports it. The master sets it in
``on_starting``; workers forked afterwards inherit it and import prometheus_client themselves.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MASTER_PID_ENV = "GATEWAY_METRICS_MASTER_PID"
OWNED_DIR_ENV = "GATEWAY_METRICS_OWNED_DIR"
"""The directory the master created itself (and removes on exit), as opposed to one an
operator chose; a re-executed master (``USR2``) inherits it but must not share it."""

log = logging.getLogger("gateway.metrics")


def prepare(environ: MutableMapping[str, str] | None = None) -> Path:
    """Give this start a fresh metrics directory and export it to the workers to come.

    An operator's ``PROMETHEUS_MULTIPROC_DIR`` is kept but emptied (files of a previous run
    would be summed into this one's counters); otherwise a new temporary directory is made.
    """
    env = os.environ if environ is None else environ
    chosen = env.get(MULTIPROC_ENV, "")
    inherited = bool(chosen) and chosen == env.get(OWNED_DIR_ENV)
    if chosen and not inherited:
        directory = Path(chosen)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
        env.pop(OWNED_DIR_ENV, None)
    else:
        directory = Path(tempfile.mkdtemp(prefix="gateway-metrics-"))
        env[OWNED_DIR_ENV] = str(directory)
        atexit.register(cleanup, env)  # a master that exits without on_exit (bind failed)
    env[MULTIPROC_ENV] = str(directory)
    env[MASTER_PID_ENV] = str(os.getpid())
    _warn_if_imported_too_early()
    return directory


def worker_exited(pid: int, environ: MutableMapping[str, str] | None = None) -> None:
    """``child_exit``: drop the dead worker's ``live*`` gauges (its connections, draining flag,
    broker state); its counters and histograms stay, so host totals never go backwards."""
    env = os.environ if environ is None else environ
    directory = env.get(MULTIPROC_ENV)
    if not directory:
        return
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def cleanup(environ: MutableMapping[str, str] | None = None) -> None:
    """``on_exit``: remove the directory if this master created it."""
    env = os.environ if environ is None else environ
    owned = env.get(OWNED_DIR_ENV)
    if owned and owned == env.get(MULTIPROC_ENV) and env.get(MASTER_PID_ENV) == str(os.getpid()):
        with contextlib.suppress(OSError):
            shutil.rmtree(owned)


def forget(environ: MutableMapping[str, str] | None = None) -> None:
    """One process (``gateway serve``) uses the ordinary registry: an inherited directory would
    make it write files nobody merges, or sum a previous run's counters into its own."""
    env = os.environ if environ is None else environ
    for name in (MULTIPROC_ENV, MASTER_PID_ENV, OWNED_DIR_ENV):
        env.pop(name, None)


def _warn_if_imported_too_early() -> None:
    values = sys.modules.get("prometheus_client.values")
    if values is not None and not getattr(values.ValueClass, "_multiprocess", False):
        log.error(
            "prometheus_client was imported in the gunicorn master before %s was set: "
            "workers forked from it keep private metric values and /metrics under-counts",
            MULTIPROC_ENV,
        )
