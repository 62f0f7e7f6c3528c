"""`sccm-refresh api` (serve) and `sccm-refresh api hash-token` (a token file line from stdin)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TextIO

from api.tokens import ROLES, token_line
from errors import ConfigError

__all__ = ["add_arguments", "hash_token", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="listen address (default: api.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="listen port, 0 for any free one (default: 8080)")
    parser.add_argument("--token-file", default=None, help="file of token hashes (default: api.token_file)")
    parser.add_argument(
        "--insecure-no-auth", action="store_true", help="serve without authentication (loopback addresses only)"
    )
    actions = parser.add_subparsers(dest="api_command", metavar="ACTION")
    hashing = actions.add_parser("hash-token", help="read a token on stdin and print its token file line")
    hashing.add_argument("--role", choices=ROLES, required=True, help="submit (trigger and read) or read")
    hashing.add_argument("--name", required=True, help="the caller's name (1-64 of A-Z a-z 0-9 _ . -)")


def run(args: argparse.Namespace) -> int:
    if args.api_command == "hash-token":
        return hash_token(role=args.role, name=args.name)
    # Imported here: `--help` and hash-token must not pay for pydantic, uvicorn and Celery.
    from pydantic import ValidationError  # noqa: PLC0415

    from api.server import serve  # noqa: PLC0415
    from config.settings import get_settings  # noqa: PLC0415

    settings = get_settings()
    overrides = {
        name: value
        for name, value in (("host", args.host), ("port", args.port), ("token_file", args.token_file))
        if value is not None
    }
    if overrides:
        try:
            api = settings.api.model_validate({**settings.api.model_dump(), **overrides})
        except ValidationError as exc:
            problems = "; ".join(f"--{'-'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"invalid api option: {problems}") from None
        settings = settings.model_copy(update={"api": api})
    return serve(settings, insecure_no_auth=args.insecure_no_auth)


def hash_token(*, role: str, name: str, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """Print `sha256:<hex> <role> <name>` for the token read from stdin (prompted on a terminal)."""
    source = sys.stdin if stdin is None else stdin
    out = sys.stdout if stdout is None else stdout
    token = getpass.getpass("token: ") if source.isatty() else source.readline().rstrip("\r\n")
    try:
        line = token_line(token, role, name)
    except ValueError as exc:
        print(f"sccm-refresh: error: {exc}", file=sys.stderr)
        return 2
    print(line, file=out)
    return 0
