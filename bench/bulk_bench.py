"""Bulk refresh benchmarks (`python -m bench.bulk_bench`, `make bench-bulk`): JSON on stdout, a table on stderr.

    broker redis-server + store redis-server + emulators (subprocesses) + `celery worker`s (threads)

1. efficiency: a bulk of `--packages` at `--latency-ms` per WS-Man operation, provider cap
   `--max-concurrency` (C), `--processes` workers x `--threads` threads. Ideal throughput is
   C / (operations per refresh x latency); a bulk child carries a package_hint, so it needs one
   operation (the Invoke). Reported next to the naive sequential loop measured in the same run
   (Get + Invoke, one after another, one session: what a PowerShell loop does), with the
   emulator's peak concurrent operations and broker messages per refresh.
3. urgent requests (packages outside the bulk's selection) sent while measurement 1 runs: their
   latency from send to final outcome, next to the p50 latency of a bulk child.
2. fan-out: for `--fanout-sizes` (latency 0), the time from the bulk request until enumeration is
   done (every child in the bulk's pending list in Redis: children reach the broker only through
   the bulk's window, docs/decisions.md), the bulk worker's peak RSS growth, broker messages so far.
4. overhead: latency 0, one worker process with `--threads` threads: the worker's CPU per bulk
   refresh next to a Celery no-op task (bench/noop_task.py) with the project's Celery settings.

Each measurement runs `--rounds` times on fresh worker processes. Exit 0 when every measurement
completed (goals missed are reported, not errors), 1 otherwise, 130 when interrupted. Everything
it starts is stopped by PID, on Ctrl-C and SIGTERM too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench.bulk_measurements import EfficiencyPlan, FanoutPlan, OverheadPlan, efficiency, fanout, overhead
from bench.bulk_report import goals, render_table
from bench.bulk_rig import Catalogue, Rig
from bench.cli_common import choice_list, machine, report_run, say
from bench.spy import find_py_spy

__all__ = ["build_parser", "main", "run"]

AUTH_MODES: Final = ("basic", "ntlm")
PARTS: Final = ("efficiency", "fanout", "overhead")
DEFAULT_PACKAGES: Final = 2000
DEFAULT_FANOUT_SIZES: Final = (2000, 10000)
DEFAULT_LATENCY_MS: Final = 100.0
DEFAULT_MAX_CONCURRENCY: Final = 8
DEFAULT_PROCESSES: Final = 2
DEFAULT_THREADS: Final = 8
DEFAULT_NAIVE: Final = 100
DEFAULT_URGENT: Final = 3
DEFAULT_ROUNDS: Final = 2
MAX_PACKAGES: Final = 50_000
SETTINGS_PREFIX: Final = "SCCM_REFRESH_"


def _problems(results: Mapping[str, list[dict[str, Any]]]) -> list[str]:
    problems = []
    for index, result in enumerate(results.get("efficiency", []), 1):
        if not result["complete"] or set(result["statuses"]) != {"accepted"}:
            problems.append(
                f"efficiency round {index}: {result['completed']}/{result['packages']}, {result['statuses']}"
            )
        if any(u["status"] != "accepted" for u in result["urgent"]):
            problems.append(f"efficiency round {index}: urgent requests {[u['status'] for u in result['urgent']]}")
    for index, result in enumerate(results.get("overhead", []), 1):
        statuses = result["refresh"]["statuses"]
        if set(statuses) != {"accepted"} or result["refresh"]["children"] == 0:
            problems.append(f"overhead round {index}: {statuses}")
    for index, sizes in enumerate(results.get("fanout", []), 1):
        for result in sizes["sizes"]:
            if result["total"] != result["packages"]:
                problems.append(f"fanout round {index}: total {result['total']} for {result['packages']} packages")
    return problems


def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """Start the servers, run every part `--rounds` times, stop everything: (report, problems)."""
    begun = time.perf_counter()
    load_before = os.getloadavg()
    results: dict[str, list[dict[str, Any]]] = {part: [] for part in args.parts}
    timings: dict[str, list[float]] = {part: [] for part in args.parts}
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="sccm-refresh-bulk-bench-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        rig = Rig.started(
            stack,
            workdir,
            auth=args.auth,
            max_concurrency=args.max_concurrency,
            worker_settings=dict(args.worker_setting),
            say=say,
        )
        password = rig.password
        max_ops = max(25, 4 * args.max_concurrency, args.processes * args.threads + 4)
        sizes = sorted({args.packages, *(args.fanout_sizes if "fanout" in args.parts else ())})
        catalogues: dict[int, Catalogue] = {}
        for size in sizes:
            catalogue = Catalogue.start(size, password=password, auth_modes=AUTH_MODES, max_ops_per_user=max_ops)
            stack.callback(catalogue.emulator.stop)
            catalogues[size] = catalogue
            say(f"[emulator] pid {catalogue.emulator.pid}: {size} packages selected, {len(catalogue.spare)} spare")
        main_catalogue = catalogues[args.packages]
        for round_no in range(1, args.rounds + 1):
            for part in args.parts:
                part_begun = time.perf_counter()
                if part == "efficiency":
                    plan = EfficiencyPlan(
                        args.latency_ms, args.processes, args.threads, args.naive, args.urgent, args.timeout_s
                    )
                    results[part].append(efficiency(rig, main_catalogue, plan, name=f"eff{round_no}"))
                elif part == "fanout":
                    fan = FanoutPlan(args.processes, args.threads, args.timeout_s)
                    results[part].append(
                        {
                            "sizes": [
                                fanout(rig, catalogues[size], fan, name=f"fan{round_no}-{size}")
                                for size in args.fanout_sizes
                            ]
                        }
                    )
                else:
                    over = OverheadPlan(args.threads, args.packages, args.timeout_s, args.profile)
                    results[part].append(overhead(rig, main_catalogue, over, name=f"over{round_no}"))
                timings[part].append(round(time.perf_counter() - part_begun, 1))
    problems = _problems(results)
    report = {
        "benchmark": "sccm-refresh bulk: efficiency, fan-out, urgent request under load, overhead per refresh",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), "load_average_at_start": [round(v, 2) for v in load_before]},
        "parameters": _parameters(args),
        "results": results,
        "goals": goals(results),
        "part_wall_s": timings,
        "ok": not problems,
        "problems": problems,
        "total_wall_s": round(time.perf_counter() - begun, 1),
    }
    return report, problems


def _parameters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "parts": list(args.parts),
        "rounds": args.rounds,
        "auth": args.auth,
        "packages": args.packages,
        "fanout_sizes": list(args.fanout_sizes),
        "latency_ms": args.latency_ms,
        "max_concurrency": args.max_concurrency,
        "worker_processes": args.processes,
        "threads_per_worker": args.threads,
        "naive_packages": args.naive,
        "urgent_requests": args.urgent,
        "worker_settings": dict(args.worker_setting),
        "profiled": args.profile is not None,
        "worker_pool": "threads",
        "redis": "two redis-servers (broker, store), AOF everysec",
        "emulator": "subprocess; STORAGE_DIRECT packages only selected, DistMgr instant, no faults",
    }


def _size_list(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(dict.fromkeys(int(part) for part in text.split(",") if part.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated package counts expected, got {text!r}") from None
    if not sizes or any(not 1 <= size <= MAX_PACKAGES for size in sizes):
        raise argparse.ArgumentTypeError(f"each size must be in [1, {MAX_PACKAGES}]")
    return sizes


def _worker_setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    name = name.strip().upper().removeprefix(SETTINGS_PREFIX)
    if not sep or not name or not all(c.isalnum() or c == "_" for c in name):
        raise argparse.ArgumentTypeError(f"NAME=VALUE expected, e.g. LIMITS__SLOT_WAIT_MIN_S=0.02 (got {text!r})")
    return SETTINGS_PREFIX + name, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bulk_bench",
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--parts", type=choice_list(PARTS), default=PARTS, help="measurements, comma-separated")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="times each measurement runs")
    parser.add_argument("--packages", type=int, default=DEFAULT_PACKAGES, help="bulk size of efficiency and overhead")
    parser.add_argument(
        "--fanout-sizes", type=_size_list, default=DEFAULT_FANOUT_SIZES, help="bulk sizes of the fan-out part"
    )
    parser.add_argument("--latency-ms", type=float, default=DEFAULT_LATENCY_MS, help="emulator latency per operation")
    parser.add_argument(
        "--max-concurrency", type=int, default=DEFAULT_MAX_CONCURRENCY, help="provider cap C (MAX_CONCURRENCY)"
    )
    parser.add_argument(
        "--processes", type=int, default=DEFAULT_PROCESSES, help="worker processes (efficiency, fanout)"
    )
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="threads per worker process")
    parser.add_argument("--naive", type=int, default=DEFAULT_NAIVE, help="packages of the naive sequential loop")
    parser.add_argument("--urgent", type=int, default=DEFAULT_URGENT, help="urgent requests during the bulk")
    parser.add_argument("--auth", choices=AUTH_MODES, default="ntlm", help="WinRM auth of the workers and the loop")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="bound of each bulk")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="after the overhead measurement, profile one more bulk with py-spy; collapsed stacks go to DIR",
    )
    parser.add_argument(
        "--worker-setting",
        type=_worker_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra SCCM_REFRESH_* setting of every worker, e.g. LIMITS__SLOT_WAIT_MIN_S=0.02 (repeatable)",
    )
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    bounds = {
        "rounds": (1, 10),
        "packages": (1, MAX_PACKAGES),
        "max_concurrency": (1, 256),
        "processes": (1, 16),
        "threads": (1, 64),
        "naive": (1, 10_000),
        "urgent": (0, 100),
    }
    for name, (low, high) in bounds.items():
        if not low <= getattr(args, name) <= high:
            parser.error(f"--{name.replace('_', '-')} must be in [{low}, {high}]")
    if not 0 <= args.latency_ms <= 10_000:
        parser.error("--latency-ms must be in [0, 10000]")
    if not 1 <= args.timeout_s <= 3600:
        parser.error("--timeout-s must be in [1, 3600]")
    if args.profile is not None and find_py_spy() is None:
        parser.error("--profile needs py-spy (pip install py-spy)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    return report_run(lambda: run(args), render_table)


if __name__ == "__main__":
    raise SystemExit(main())
