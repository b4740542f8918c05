"""``gateway`` command line: ``gateway serve`` runs one uvicorn process or a gunicorn fleet."""

from __future__ import annotations

import argparse
import sys

from gateway.settings import SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", help="bind address (default GATEWAY_HOST or 0.0.0.0)")
    serve.add_argument("--port", type=int, help="bind port (default GATEWAY_PORT or 8000)")
    serve.add_argument(
        "--workers", type=int, help="gunicorn workers (default GATEWAY_WORKERS if set, else 1)"
    )
    token = commands.add_parser(
        "token", help="mint a development JWT signed with GATEWAY_AUTH_SECRET"
    )
    token.add_argument("--sub", required=True, help="the identity (the token's sub claim)")
    token.add_argument("--rooms", help="comma list of rooms or prefix* it may join (default any)")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    args = parser.parse_args(argv)
    if args.command == "token":
        return mint_token(args.sub, args.rooms, args.ttl)

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
    # GATEWAY_WORKERS=0 (its default, "auto" to gunicorn_conf) stays one process here: a single
    # `gateway serve` with a Redis URL must not become a fleet the size of the host.
    workers = args.workers if args.workers is not None else (settings.workers or 1)
    if workers < 1:
        print("gateway: --workers must be at least 1", file=sys.stderr)
        return 2
    if workers > 1 and not settings.uses_shared_broker:
        print(
            "gateway: --workers > 1 needs a shared broker: set GATEWAY_BROKER_URL=redis://host:port/db",
            file=sys.stderr,
        )
        return 2
    from gateway.server import run

    if workers > 1:
        return run.serve_workers(settings, workers)
    return run.serve_single(settings)


def mint_token(sub: str, rooms: str | None, ttl: int) -> int:
    """Print a token to stdout; the secret comes only from the environment, never argv, so it
    stays out of shell history and ``ps``."""
    from gateway.auth import mint

    try:
        secret = load_settings().auth_secret
    except SettingsError as error:
        print(f"gateway: invalid setting: {error}", file=sys.stderr)
        return 2
    if not secret:
        print("gateway: token needs GATEWAY_AUTH_SECRET (the server's secret)", file=sys.stderr)
        return 2
    if ttl < 1:
        print("gateway: --ttl must be at least 1 second", file=sys.stderr)
        return 2
    grants = None if rooms is None else [room.strip() for room in rooms.split(",") if room.strip()]
    try:
        print(mint(secret, sub, ttl=ttl, rooms=grants))
    except ValueError as error:
        print(f"gateway: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
