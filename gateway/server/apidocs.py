"""``/docs``, ``/redoc`` and ``/openapi.json`` (``GATEWAY_API_DOCS``): Swagger UI and ReDoc with
every script and style served by the gateway itself (``fastapi-offline`` ships them), as the
Content-Security-Policy requires."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from gateway.server.httpguard import REDOC_STYLE_HASHES, content_security_policy

DOCS_DIR = files("gateway") / "apidocs"


REDOC_LOGO = b'src:"https://cdn.redoc.ly/redoc/logo-mini.svg"'


def _redoc_bundle() -> bytes:
    """ReDoc's bundle without its one outside fetch: the footer's Redocly logo, from their CDN.
    ``data:,`` fails to decode and the logo removes itself, as it would offline."""
    bundle = (files("fastapi_offline") / "static" / "redoc.standalone.js").read_bytes()
    return bundle.replace(REDOC_LOGO, b'src:"data:,"')


def serve_docs(app: FastAPI) -> None:
    """Swagger UI and ReDoc, each page's scripts and styles from here (see the module doc)."""
    redoc_policy = {"Content-Security-Policy": content_security_policy(*REDOC_STYLE_HASHES)}
    redoc_bundle = _redoc_bundle()

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> Response:
        return FileResponse(str(DOCS_DIR / "swagger.html"), media_type="text/html")

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> Response:
        page = str(DOCS_DIR / "redoc.html")
        return FileResponse(page, media_type="text/html", headers=redoc_policy)

    @app.get("/docs-assets/redoc.standalone.js", include_in_schema=False)
    async def redoc_script() -> Response:
        return Response(redoc_bundle, media_type="text/javascript")

    assets = StaticFiles(directory=str(DOCS_DIR), packages=[("fastapi_offline", "static")])
    app.mount("/docs-assets", assets, name="docs-assets")
