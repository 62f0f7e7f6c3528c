"""`python -m chaos [--requests N] [--scenario NAME ...] [--bulk-size N] [--seed S] [--json]`.

Runs the chosen scenarios (all by default) one after another, each against its own freshly
started pipeline, and prints one table row per scenario as it finishes (with --json, also one
JSON line per row). Exit status: 0 when every scenario kept its promise, 1 when any broke it,
2 for bad arguments, 130 when interrupted. Progress goes to stderr; logs and each scenario's
Redis data stay in the work directory.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from chaos.report import Row, format_header, format_row, row_json
from chaos.scenario import RunOptions
from chaos.scenarios import SCENARIOS

__all__ = ["build_parser", "main"]

DEFAULT_REQUESTS: Final = 300
DEFAULT_BULK_SIZE: Final = 1000
MAX_REQUESTS: Final = 20_000
DEFAULT_WORKDIR: Final = Path(".sccm-refresh")


def _requests(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_REQUESTS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_REQUESTS}")
    return value


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chaos",
        description="Chaos and fuzz scenarios against the real pipeline; one row per scenario.",
    )
    parser.add_argument(
        "--requests",
        type=_requests,
        default=DEFAULT_REQUESTS,
        help=f"messages per scenario (default {DEFAULT_REQUESTS})",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--bulk-size",
        type=_requests,
        default=DEFAULT_BULK_SIZE,
        help=f"packages in the bulk of bulk-kill (default {DEFAULT_BULK_SIZE})",
    )
    parser.add_argument(
        "--auth",
        choices=("ntlm", "kerberos"),
        default="ntlm",
        help="how the workers authenticate: ntlm (default), or kerberos against a KDC the rig starts "
        "(needs krb5-kdc, krb5-admin-server and the kerberos extra; docs/kerberos.md)",
    )
    parser.add_argument("--seed", type=_seed, default=1, help="seed of every random choice (default 1)")
    parser.add_argument("--json", action="store_true", help="also print one JSON line per scenario")
    parser.add_argument("--no-flower", action="store_true", help="do not run Flower (its answers are not searched)")
    parser.add_argument(
        "--workdir", type=Path, default=DEFAULT_WORKDIR, help="where logs and Redis data go (default .sccm-refresh)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = list(dict.fromkeys(args.scenario or SCENARIOS))
    workdir = (args.workdir / f"chaos-{uuid.uuid4().hex[:8]}").resolve()
    options = RunOptions(
        requests=args.requests,
        seed=args.seed,
        workdir=workdir,
        flower=not args.no_flower,
        bulk_size=args.bulk_size,
        auth=args.auth,
    )
    print(
        f"[chaos] {len(names)} scenario(s), {args.requests} requests each, seed {args.seed}; logs in {workdir}",
        file=sys.stderr,
    )
    print(format_header(), flush=True)
    rows: list[Row] = []
    broken_harness: list[str] = []
    started = time.monotonic()
    try:
        for name in names:
            scenario = SCENARIOS[name]
            print(f"[chaos] {name}: {scenario.promise}", file=sys.stderr, flush=True)
            began = time.monotonic()
            try:
                row = scenario.run(options)
            except Exception as exc:  # the harness itself failed (a server would not start ...): say so, go on
                print(f"[chaos] {name} could not run: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                broken_harness.append(name)
                continue
            rows.append(row)
            print(format_row(row), flush=True)
            if args.json:
                print(row_json(row), flush=True)
            print(f"[chaos] {name} took {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("[chaos] interrupted", file=sys.stderr)
        return 130
    broken = [row.scenario for row in rows if not row.ok] + broken_harness
    verdict = f"broke its promise: {', '.join(broken)}" if broken else "every scenario kept its promise"
    print(f"[chaos] {verdict} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 1 if broken else 0
