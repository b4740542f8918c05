"""gunicorn config of the image: ``gunicorn -c ops/gunicorn.conf.py gateway.app:app``.

The settings live in the package (``gateway/server/gunicorn_conf.py``) so ``gateway serve
--workers N`` and an installed gateway use the same ones. Reading this file again (a HUP reload,
a test) re-reads them from the environment."""

import importlib
import sys

if "gateway.server.gunicorn_conf" in sys.modules:
    importlib.reload(sys.modules["gateway.server.gunicorn_conf"])

from gateway.server.gunicorn_conf import *  # noqa: F403
