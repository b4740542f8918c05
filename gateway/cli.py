"""``gateway`` command line: ``gateway serve`` runs one uvicorn process or a gunicorn fleet."""

from __future__ import annotations

import argparse
import sys

from gateway.settings import Settings, SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", help="bind address (default GATEWAY_HOST or 0.0.0.0)")
    serve.add_argument("--port", type=int, help="bind port (default GATEWAY_PORT or 8000)")
    serve.add_argument("--workers", type=int, default=1, help="gunicorn workers (default 1)")
    args = parser.parse_args(argv)

    overrides: dict[str, object] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port:
        overrides["port"] = args.port
    try:
        settings = load_settings(**overrides)
    except SettingsError as error:
        print(f"gateway: invalid setting: {error}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("gateway: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1 and not settings.uses_shared_broker:
        print(
            "gateway: --workers > 1 needs a shared broker: set GATEWAY_BROKER_URL=redis://host:port/db",
            file=sys.stderr,
        )
        return 2
    if args.workers > 1:
        return serve_workers(settings, args.workers)
    return serve_single(settings)


def serve_single(settings: Settings) -> int:
    from gateway import logs, multiproc

    multiproc.forget()
    logs.configure(settings.log_level, settings.log_format)

    import uvicorn

    from gateway.app import create_app
    from gateway.lifecycle import DrainingServer
    from gateway.serving import uvicorn_options
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
    print("gateway: --workers needs the gunicorn integration, not built yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
