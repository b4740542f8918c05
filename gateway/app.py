"""``gateway.app:app``: the ASGI application by the name gunicorn, the image and the SPEC use.

Built on first access by :func:`gateway.server.app.create_app` from the environment's
settings, never at import, so importing this module costs nothing and tests build their own.
"""

from __future__ import annotations

from typing import Any

from gateway.server.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
