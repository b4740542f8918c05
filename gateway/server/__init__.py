"""The server layer: the only part of the gateway that imports Starlette, FastAPI, uvicorn,
gunicorn or uvicorn-worker (ruff's banned-api rule fails anything else that tries).

| module | job |
|---|---|
| ``app`` | the ASGI app: routes, lifespan, the chat WebSockets past FastAPI's router |
| ``api`` | the server API's routes over :mod:`gateway.api` |
| ``apidocs`` | Swagger UI and ReDoc served from the package |
| ``httpguard`` | a pure ASGI layer: security headers, ``/api/`` bodies refused unread |
| ``transport`` | a chat WebSocket: handshake to policy, read loop, close accounting |
| ``wsprotocol``, ``corking`` | uvicorn's WebSocket protocol with heartbeats, raw corked writes |
| ``handshake`` | uvicorn's HTTP protocol with a handshake deadline and a socket cap |
| ``options`` | the uvicorn options that carry the settings down to those protocols |
| ``uvicorn_server`` | uvicorn's server, running the drain before its own shutdown |
| ``run`` | ``gateway serve``: one uvicorn process, or exec into a gunicorn master |
| ``worker``, ``gunicorn_conf`` | the gunicorn worker class and configuration |
| ``instrumentation`` | OpenTelemetry's FastAPI instrumentation |
"""
