"""`sccm-refresh`: the command line.

    sccm-refresh demo                  the main job end to end on the embedded default
    sccm-refresh emulator [flags]      the SMS Provider emulator (see `sccm-refresh emulator -h`)
    sccm-refresh enqueue SITE PKG...   validate and enqueue refresh requests
    sccm-refresh watch                 follow outcomes live (Redis pub/sub)
    sccm-refresh bulk SITE [criteria]  refresh every package the criteria select (--dry-run, --wait)
    sccm-refresh status BULK_ID        a bulk job's state and counts
    sccm-refresh cancel BULK_ID        stop a bulk job (children not yet attempted end cancelled)
    sccm-refresh doctor                Redis, queues, misrouted messages, consuming workers
    sccm-refresh worker [celery args]  a Celery worker (same as `celery -A worker.app worker`)
    sccm-refresh api [flags]           the HTTP trigger API (`api hash-token` makes token file lines)
    sccm-refresh flower [flags]        Flower, every route behind basic auth (see `sccm-refresh flower -h`)
    sccm-refresh health worker|http    health checks for containers (exit 0 healthy, 1 not)

Bad input is reported as one line on stderr with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ops.commands import add_flower_parser, add_health_parser

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69  # sysexits EX_UNAVAILABLE: a service we need is not there


# worker.domain.request.UNTIL_VALUES, spelled out: importing it would load pydantic for `--help`
# (tests/unit/test_request_until.py keeps the two equal).
UNTIL_CHOICES = ("accepted", "source_updated", "distributed")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sccm-refresh",
        description="Refresh ConfigMgr package sources at scale (RefreshPkgSource over WinRM).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the main job end to end against the emulator")
    demo.add_argument("--packages", type=int, default=300, help="catalogue size of the demo emulator")
    demo.add_argument("--timeout-s", type=float, default=120.0, help="give up waiting for outcomes after this")
    demo.add_argument(
        "--medium-ready-after-s",
        type=float,
        default=5.0,
        help="how long a STORAGE_COMPRESS medium stays not ready after its first refresh",
    )
    demo.add_argument("--seed", type=int, default=7, help="emulator seed (catalogue and faults)")
    demo.add_argument("--keep", action="store_true", help="leave everything running until Ctrl-C")

    sub.add_parser("emulator", help="run the SMS Provider emulator", add_help=False)

    enqueue = sub.add_parser("enqueue", help="validate and enqueue refresh requests")
    enqueue.add_argument("site_code", help="3-character site code, e.g. PS1")
    enqueue.add_argument("package_ids", nargs="+", metavar="PACKAGE_ID", help="e.g. PS100012")
    enqueue.add_argument("--class", dest="package_class", default="SMS_DriverPackage", help="WMI package class")
    enqueue.add_argument("--correlation-id", default=None)
    enqueue.add_argument("--verify", action="store_true", help="the older spelling of --until source_updated")
    enqueue.add_argument(
        "--until",
        choices=UNTIL_CHOICES,
        default=None,
        help="follow each request until accepted (default), source_updated, or distributed (every targeted DP)",
    )
    enqueue.add_argument(
        "--redistribute-failed",
        action="store_true",
        help="with --until distributed: send RefreshNow to a DP that failed (at most once per DP per window)",
    )
    enqueue.add_argument("--force", action="store_true", help="allow SMS_TaskSequencePackage")

    watch = sub.add_parser("watch", help="follow outcomes live")
    watch.add_argument("--count", type=int, default=0, help="stop after this many final outcomes (0 = never)")
    watch.add_argument("--timeout-s", type=float, default=0.0, help="stop after this long (0 = never)")

    bulk = sub.add_parser("bulk", help="refresh every package of a site the criteria select")
    bulk.add_argument("site_code", help="3-character site code, e.g. PS1")
    bulk.add_argument(
        "--class",
        dest="classes",
        action="append",
        metavar="CLASS",
        help=(
            "package class (repeatable; default: SMS_Package and SMS_DriverPackage; boot images, OS images "
            "and the like only when named; SMS_ContentPackage is refused)"
        ),
    )
    bulk.add_argument("--name", dest="name_pattern", metavar="PATTERN", help="name pattern: * any run, ? one character")
    bulk.add_argument(
        "--flag",
        dest="flags",
        action="append",
        type=int,
        metavar="N",
        help="PkgSourceFlag value (repeatable), e.g. 3 for STORAGE_COMPRESS",
    )
    bulk.add_argument("--id", dest="package_ids", action="append", metavar="PACKAGE_ID", help="explicit PackageID")
    bulk.add_argument("--ids-file", type=Path, help="a file of PackageIDs, one per line")
    bulk.add_argument("--exclude", action="append", default=[], metavar="PACKAGE_ID", help="PackageID to leave out")
    bulk.add_argument("--force", action="store_true", help="allow SMS_TaskSequencePackage (named with --class)")
    bulk.add_argument("--dry-run", action="store_true", help="count and list the packages, refresh nothing")
    bulk.add_argument(
        "--until",
        choices=UNTIL_CHOICES,
        default="accepted",
        help="follow every child until accepted (default), source_updated, or distributed (every targeted DP)",
    )
    bulk.add_argument("--wait", action="store_true", help="follow it with a progress bar until it ends")
    bulk.add_argument("--timeout-s", type=float, default=0.0, help="stop waiting after this long (0 = never)")

    status = sub.add_parser("status", help="a bulk job's state and counts")
    status.add_argument("bulk_id")
    status.add_argument("--json", action="store_true", help="print the record as JSON")
    status.add_argument(
        "--dps", action="store_true", help="the DPs holding the bulk's packages back (until distributed), most first"
    )
    status.add_argument("--limit", type=int, default=50, help="with --dps: list at most this many DPs (1-500)")
    cancel = sub.add_parser("cancel", help="cancel a bulk job")
    cancel.add_argument("bulk_id")

    sub.add_parser("doctor", help="check Redis, the queues (misrouted messages too) and the workers")
    sub.add_parser("worker", help="run a Celery worker", add_help=False)

    from api.cli import add_arguments as add_api_arguments

    add_api_arguments(sub.add_parser("api", help="serve the HTTP trigger API"))
    add_flower_parser(sub)
    add_health_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911 - one return per way a command ends
    args_list = list(sys.argv[1:] if argv is None else argv)
    # Pass-through commands keep their own argument parsers.
    if args_list and args_list[0] == "emulator":
        from emulator.cli import main as emulator_main

        return emulator_main(args_list[1:])
    if args_list and args_list[0] == "worker":
        from worker.app import app

        app.worker_main(["worker", *args_list[1:]])
        return 0

    args = _build_parser().parse_args(args_list)
    # Imported once the arguments parsed: `--help` and a usage error answer without loading Redis
    # and Celery (about 2.5 s of imports on a small machine; container health checks run often).
    from redis.exceptions import RedisError

    from embedded.redis_server import RedisUnavailableError
    from errors import RefreshError

    try:
        return _COMMANDS[args.command](args)
    except RefreshError as exc:
        print(f"sccm-refresh: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except RedisUnavailableError as exc:
        print(f"sccm-refresh: error: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except RedisError as exc:
        # Lost mid-command (the up-front PING passed). redis-py's messages name host and port only.
        print(f"sccm-refresh: error: lost the connection to Redis ({type(exc).__name__}: {exc})", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


# Each command's module is imported when that command runs: `sccm-refresh emulator` must not pay
# for Celery, nor `status` for FastAPI.


def _demo(args: argparse.Namespace) -> int:
    from cli.demo import run_demo

    return run_demo(
        packages=args.packages,
        timeout_s=args.timeout_s,
        medium_ready_after_s=args.medium_ready_after_s,
        seed=args.seed,
        keep=args.keep,
    )


def _enqueue(args: argparse.Namespace) -> int:
    from cli.commands import enqueue

    return enqueue(
        args.site_code,
        args.package_ids,
        package_class=args.package_class,
        correlation_id=args.correlation_id,
        verify=args.verify,
        until=args.until,
        redistribute_failed=args.redistribute_failed,
        force=args.force,
    )


def _watch(args: argparse.Namespace) -> int:
    from cli.commands import watch

    return watch(count=args.count, timeout_s=args.timeout_s)


def _api(args: argparse.Namespace) -> int:
    from api.cli import run as run_api

    return run_api(args)


def _doctor(_args: argparse.Namespace) -> int:
    from cli.doctor import doctor

    return doctor()


def _flower(args: argparse.Namespace) -> int:
    from ops.commands import flower_command

    return flower_command(args)


def _health(args: argparse.Namespace) -> int:
    from ops.commands import health_command

    return health_command(args)


def _bulk_command(args: argparse.Namespace) -> int:
    from cli import bulk_commands

    if args.command == "status":
        if args.dps:
            return bulk_commands.stragglers(args.bulk_id, as_json=args.json, limit=args.limit)
        return bulk_commands.status(args.bulk_id, as_json=args.json)
    if args.command == "cancel":
        return bulk_commands.cancel(args.bulk_id)
    return bulk_commands.bulk(
        args.site_code,
        classes=args.classes,
        name_pattern=args.name_pattern,
        flags=args.flags,
        package_ids=args.package_ids,
        ids_file=args.ids_file,
        exclude=args.exclude,
        force=args.force,
        dry_run=args.dry_run,
        until=args.until,
        wait=args.wait,
        timeout_s=args.timeout_s,
    )


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": _demo,
    "enqueue": _enqueue,
    "watch": _watch,
    "api": _api,
    "bulk": _bulk_command,
    "status": _bulk_command,
    "cancel": _bulk_command,
    "doctor": _doctor,
    "flower": _flower,
    "health": _health,
}


if __name__ == "__main__":
    sys.exit(main())
