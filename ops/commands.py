"""The operations commands behind `sccm-refresh flower` and `sccm-refresh health ...`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Final

from ops.flower_config import FlowerConfig, FlowerConfigError, load_credentials, resolve_credentials

__all__ = ["EXIT_UNHEALTHY", "add_flower_parser", "add_health_parser", "flower_command", "health_command"]

EXIT_UNHEALTHY: Final = 1
EXIT_USAGE: Final = 2
_MAX_TIMEOUT_S: Final = 3600.0


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text[:20]!r}") from None
    if not 0 < value <= _MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most {_MAX_TIMEOUT_S:g} seconds")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text[:20]!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be 0-65535 (0: any free port)")
    return value


def add_flower_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    flower = sub.add_parser("flower", help="Flower for sccm-refresh, every route behind basic auth")
    flower.add_argument("--address", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    flower.add_argument("--port", type=_port, default=5555)
    flower.add_argument(
        "--basic-auth-file",
        type=Path,
        default=None,
        help="file of user:password lines (or $SCCM_REFRESH_FLOWER_BASIC_AUTH_FILE)",
    )
    flower.add_argument(
        "--insecure-no-auth", action="store_true", help="run without a login (refused unless bound to loopback)"
    )
    flower.add_argument("--max-tasks", type=int, default=10_000, help="tasks kept in memory")
    flower.add_argument("--url-prefix", default="", help="serve under this path (behind a reverse proxy)")
    flower.add_argument("--xheaders", action="store_true", help="trust X-Forwarded-* (behind a reverse proxy)")
    flower.add_argument("--read-only", action="store_true", help="hide the revoke/terminate/pool controls")
    flower.add_argument(
        "--purge-offline-workers-s", type=int, default=None, help="drop workers offline this long from the metrics"
    )
    flower.add_argument(
        "--log-format", choices=("text", "json"), default=None, help="default: $SCCM_REFRESH_LOG_FORMAT"
    )
    flower.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), default="INFO")


def add_health_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    health = sub.add_parser("health", help="health checks (exit 0 healthy, 1 not)")
    checks = health.add_subparsers(dest="check", required=True, metavar="CHECK")
    worker = checks.add_parser("worker", help="a probe through the broker to one worker, awaited in Redis")
    worker.add_argument("--node", default=None, help="the worker's node name (default: celery@<this host>)")
    worker.add_argument("--timeout-s", type=_timeout, default=20.0)
    http = checks.add_parser("http", help="GET a URL; healthy on a 2xx answer")
    http.add_argument("url")
    http.add_argument("--basic-auth-file", type=Path, default=None, help="log in with its first user:password line")
    http.add_argument("--timeout-s", type=_timeout, default=5.0)


def flower_command(args: argparse.Namespace) -> int:
    from ops.logs import configure_logging

    configure_logging(args.log_level, args.log_format)
    try:
        credentials = resolve_credentials(
            basic_auth_file=args.basic_auth_file, insecure_no_auth=args.insecure_no_auth, address=args.address
        )
    except FlowerConfigError as exc:
        print(f"sccm-refresh flower: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.max_tasks < 1:
        print("sccm-refresh flower: error: --max-tasks must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        from ops.flower_app import run_flower  # Flower and Tornado load only for this command
    except ImportError:
        print(
            "sccm-refresh flower: error: Flower is not installed: pip install 'sccm-refresh[monitor]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from worker.app import app  # reads the settings: only once the arguments are valid

    config = FlowerConfig(
        address=args.address,
        port=args.port,
        credentials=credentials,
        max_tasks=args.max_tasks,
        url_prefix=args.url_prefix,
        xheaders=args.xheaders,
        read_only=args.read_only,
        purge_offline_workers_s=args.purge_offline_workers_s,
    )
    return run_flower(app, config)


def health_command(args: argparse.Namespace) -> int:
    if args.check == "worker":
        from ops.health import check_worker

        result = check_worker(args.node, timeout_s=args.timeout_s)
        print(result.line(), flush=True)
        return 0 if result.healthy else EXIT_UNHEALTHY
    return _check_http(args.url, basic_auth_file=args.basic_auth_file, timeout_s=args.timeout_s)


def _check_http(url: str, *, basic_auth_file: Path | None, timeout_s: float) -> int:
    if not url.startswith(("http://", "https://")):
        print(f"sccm-refresh health: error: not an http(s) URL: {url[:80]!r}", file=sys.stderr)
        return EXIT_USAGE
    auth = None
    if basic_auth_file is not None:
        try:
            user, _, password = load_credentials(basic_auth_file)[0].partition(":")
        except FlowerConfigError as exc:
            print(f"sccm-refresh health: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        auth = (user, password)
    import requests

    try:
        response = requests.get(url, auth=auth, timeout=timeout_s, allow_redirects=False)
    except requests.RequestException as exc:
        print(f"UNHEALTHY: {url} did not answer ({type(exc).__name__})", flush=True)
        return EXIT_UNHEALTHY
    healthy = 200 <= response.status_code < 300
    print(f"{'healthy' if healthy else 'UNHEALTHY'}: {url} answered {response.status_code}", flush=True)
    return 0 if healthy else EXIT_UNHEALTHY
