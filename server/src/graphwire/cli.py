"""``graphwire serve``: run the gateway under uvicorn with the settings' socket limits.

With ``--workers N`` (N > 1, Redis required) a supervisor keeps N gateway processes on
the one port (``graphwire.supervisor``); with one, the gateway is this process.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import resource
import socket
import sys

import uvicorn

from graphwire import logs
from graphwire.app import create_app
from graphwire.auth import Authenticator
from graphwire.settings import Settings, SettingsProblem, load_settings
from graphwire.supervisor import supervise
from graphwire.transport import GatewayServer, gateway_protocol

__all__ = ["main"]


def raise_fd_limit() -> None:
    """Lift the soft open-files limit to the hard one: each connection is a descriptor."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def tune_gc() -> None:
    """Keep the cyclic garbage collector out of the fan-out path.

    Every flush creates short-lived objects for thousands of sockets; with the default
    thresholds the collector runs constantly and its full passes over every live
    connection show up as latency spikes (p99 2-3x worse in ``make bench``). Objects
    created at start-up are frozen out of collection, and young collections wait for
    50,000 allocations instead of 700.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def mint_token(sub: str, scope: str, ttl: float) -> int:
    try:
        settings = load_settings()
        print(Authenticator(settings).mint(sub, scope.split(), ttl))
    except (SettingsProblem, ValueError) as exc:
        print(f"graphwire: {exc}", file=sys.stderr)
        return 2
    return 0


def log_access(settings: Settings) -> None:
    """One line on who may connect: an open gateway should never be a surprise."""
    log = logging.getLogger("graphwire")
    origins = "any Origin" if "*" in settings.origins else "Origins " + ", ".join(settings.origins)
    if settings.auth_jwt_secret is None and settings.auth_jwt_public_key is None:
        log.warning(
            "auth is off: anyone who reaches this port may connect, without a token, from %s "
            "(set GRAPHWIRE_AUTH_JWT_SECRET or GRAPHWIRE_AUTH_JWT_PUBLIC_KEY, and GRAPHWIRE_ORIGINS)",
            origins,
        )
    else:
        log.info("auth is on: every connection needs a valid token; browsers from %s", origins)


def worker_count(value: str) -> int:
    """``--workers``: a whole number of processes, at least one."""
    count = int(value)
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {count}")
    return count


def run_gateway(settings: Settings, log_level: str, sockets: list[socket.socket] | None = None, slot: int = 0) -> int:
    """One gateway process: its app under ``GatewayServer``, on ``sockets`` when given (worker ``slot``)."""
    try:
        app = create_app(settings)
    except (ImportError, AttributeError, ValueError) as exc:
        print(f"graphwire: cannot load workflows {settings.workflows}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    log_access(settings)
    if settings.metrics and settings.metrics_port is not None:
        port = settings.metrics_port + slot
        try:
            app.gateway.metrics.serve_on(settings.host, port)
        except OSError as exc:
            print(f"graphwire: cannot serve metrics on {settings.host}:{port}: {exc}", file=sys.stderr)
            return 2
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        ws_max_size=settings.max_message_size,
        ws_ping_interval=settings.ping_interval or None,
        ws_ping_timeout=settings.ping_timeout or None,
        ws_per_message_deflate=settings.compression == "deflate",
        # uvicorn's websockets-sansio protocol with bounded closes (graphwire.transport).
        ws=gateway_protocol(settings, app.gateway.metrics.slow_consumer_closes.labels("write_timeout").inc),
        # Thousands of watchers connect at once; uvicorn's default backlog (2048) makes the
        # rest retry their SYN a second later. The kernel caps it at net.core.somaxconn.
        backlog=settings.backlog,
        # Access lines would carry the `token` query parameter once auth exists.
        access_log=False,
        log_config=logs.uvicorn_log_config(settings.log_format),
    )
    raise_fd_limit()
    tune_gc()
    GatewayServer(
        config, settings.shutdown_grace, app.gateway.end_runs, app.gateway.drain, settings.shutdown_delay
    ).run(sockets)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="graphwire", description="graphwire WebSocket gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", default=None, help="bind address (default 127.0.0.1, GRAPHWIRE_HOST)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000, GRAPHWIRE_PORT)")
    serve.add_argument(
        "--workflows",
        action="append",
        default=None,
        metavar="MODULE:FUNCTION",
        help="also register the workflows of this function (called with the registry); repeatable",
    )
    serve.add_argument(
        "--workers",
        type=worker_count,
        default=None,
        help="gateway processes on the one port (default 1, GRAPHWIRE_WORKERS); more than 1 needs GRAPHWIRE_REDIS_URL",
    )
    serve.add_argument("--log-level", default="info")
    token = sub.add_parser("token", help="print a development token signed with GRAPHWIRE_AUTH_JWT_SECRET (HS256)")
    token.add_argument("--sub", required=True, help="the user (the token's sub)")
    token.add_argument("--scope", default="", help='space-separated scopes, e.g. "workflows:start runs:read"')
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires (default 3600)")
    args = parser.parse_args(argv)
    if args.command == "token":
        return mint_token(args.sub, args.scope, args.ttl)

    given = (("host", args.host), ("port", args.port), ("workflows", args.workflows), ("workers", args.workers))
    overrides = {k: v for k, v in given if v}
    try:
        settings = load_settings(**overrides)
    except SettingsProblem as exc:
        print(f"graphwire: {exc}", file=sys.stderr)
        return 2
    if settings.workers > 1 and settings.redis_url is None:
        print(
            f"graphwire: {settings.workers} workers need Redis: set GRAPHWIRE_REDIS_URL (e.g. redis://127.0.0.1:6379/0);"
            " gateway processes share groups, topics and runs only through it",
            file=sys.stderr,
        )
        return 2
    # `--workflows myflows:register` names a module beside the user, as `uvicorn
    # --app-dir .` does: the current directory is importable.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    logs.configure(settings.log_format, args.log_level)
    if settings.workers == 1:
        return run_gateway(settings, args.log_level)
    # Each worker builds its own app after the fork (graphwire.supervisor).
    return supervise(settings, lambda sock, slot: run_gateway(settings, args.log_level, [sock], slot))


if __name__ == "__main__":
    raise SystemExit(main())
