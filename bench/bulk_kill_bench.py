"""A bulk through the API with a worker SIGKILLed part-way, next to the same bulk without.

`python -m bench.bulk_kill_bench` (`make bench-bulk-kill`):

    broker redis-server + store redis-server + emulator (subprocess) + `celery worker`s (threads)
    + `sccm-refresh api` (subprocess), all per measurement on fresh worker processes and a fresh API

Each round runs the same bulk twice on the same emulated catalogue: a baseline, then a run in
which worker 0 is SIGKILLed (its whole process group) once `--kill-at` of the children are
finished (GET /v1/bulk-refreshes/{id}), and restarted at once, as systemd would. The time of a
bulk is from its POST until the API reports it `done`. Goal: the killed run ends `done` within
`--within-s` (60 s) of the baseline. Also per run: every child exactly one final outcome (read
from the outcome stream), and no extra refresh (the emulator's accepted RefreshPkgSource calls
equal the bulk's size).

JSON on stdout, a table on stderr. Exit 0 when every bulk completed and was counted right (a
missed goal is reported, not an error), 1 otherwise, 130 when interrupted. Everything it starts
is stopped by PID, on Ctrl-C and SIGTERM too.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench.bulk_rig import WORKER_READY_TIMEOUT_S, Catalogue, Lane, Rig
from bench.cli_common import machine, report_run, say
from embedded.worker_process import WorkerProcess
from testing.bulk_api import OVER_STATES, BulkApi
from worker.stores.outcome_reader import read_stream
from worker.stores.redis_client import redis_from_url

__all__ = ["build_parser", "main", "run"]

AUTH_MODES: Final = ("basic", "ntlm")
DEFAULT_PACKAGES: Final = 1000
DEFAULT_LATENCY_MS: Final = 100.0
DEFAULT_MAX_CONCURRENCY: Final = 8
DEFAULT_PROCESSES: Final = 2
DEFAULT_THREADS: Final = 8
DEFAULT_KILL_AT: Final = 0.3
DEFAULT_WITHIN_S: Final = 60.0
MAX_PACKAGES: Final = 20_000
_POLL_S: Final = 0.1
_STREAM_BATCH: Final = 1000


@dataclass(frozen=True)
class Plan:
    packages: int
    processes: int
    threads: int
    kill_at: float
    timeout_s: float


def _kill_and_restart(victim: WorkerProcess, record: dict[str, Any]) -> None:
    """SIGKILL the worker's process group, then start it again (on its own thread: the bulk goes on)."""
    record["killed_pid"] = victim.pid
    killed = time.perf_counter()
    victim.kill()
    victim.start(ready_timeout_s=WORKER_READY_TIMEOUT_S)
    record["restarted_in_s"] = round(time.perf_counter() - killed, 2)


def _wait_done(api: BulkApi, bulk_id: str, deadline: float, *, kill: tuple[Lane, float] | None) -> dict[str, Any]:
    """Poll the bulk until it is over (or the deadline); with `kill`, SIGKILL and restart worker 0
    once that share of its children is finished. The run's record."""
    killed: dict[str, Any] | None = None
    restart: threading.Thread | None = None
    status = api.status(bulk_id)
    while status["state"] not in OVER_STATES and time.perf_counter() < deadline:
        if kill is not None and killed is None:
            lane, share = kill
            total = status["total"] or 0
            if total and status["finished"] >= share * total:
                killed = {"finished_at_kill": status["finished"], "at_perf_s": time.perf_counter()}
                restart = threading.Thread(target=_kill_and_restart, args=(lane.workers[0], killed), daemon=True)
                restart.start()
        time.sleep(_POLL_S)  # the API's answer: polled, as a client would
        status = api.status(bulk_id)
    if restart is not None:
        restart.join(WORKER_READY_TIMEOUT_S + 15)
    return {"status": status, "kill": killed}


def _finals(lane: Lane, bulk_id: str) -> Counter[str]:
    """Final outcomes per child request id, read from the start of the lane's outcome stream."""
    client = redis_from_url(lane.rig.store.url)
    finals: Counter[str] = Counter()
    after = "0-0"
    try:
        while True:
            entries = read_stream(client, lane.keys, after_id=after, count=_STREAM_BATCH)
            for entry in entries:
                after = entry.stream_id
                if entry.outcome.final and entry.outcome.request_id.startswith(f"{bulk_id}:"):
                    finals[entry.outcome.request_id] += 1
            if len(entries) < _STREAM_BATCH:
                return finals
    finally:
        client.close()


def measure(rig: Rig, catalogue: Catalogue, plan: Plan, *, name: str, kill: bool) -> dict[str, Any]:
    """One bulk of `plan.packages` through the API on fresh workers; with `kill`, worker 0 SIGKILLed part-way."""
    with (
        rig.lane(catalogue, name, processes=plan.processes, threads=plan.threads) as lane,
        BulkApi(lane.env, rig.workdir / f"api-{name}") as api,
    ):
        accepted_before = catalogue.call_totals()["accepted"]
        say(f"[{name}] bulk of {plan.packages}" + (f", worker 0 SIGKILLed at {plan.kill_at:.0%}" if kill else ""))
        begun = time.perf_counter()
        bulk_id = api.submit(catalogue.criteria())
        run = _wait_done(api, bulk_id, begun + plan.timeout_s, kill=(lane, plan.kill_at) if kill else None)
        over_s = time.perf_counter() - begun
        finals = _finals(lane, bulk_id)
        accepted = catalogue.call_totals()["accepted"] - accepted_before
    status, killed = run["status"], run["kill"]
    if killed is not None:
        killed["after_s"] = round(killed.pop("at_perf_s") - begun, 2)
    return {
        "name": name,
        "killed": killed,
        "state": status["state"],
        "done": status["state"] == "done",
        "time_to_done_s": round(over_s, 2),
        "server_time_s": _server_time_s(status),
        "total": status["total"],
        "counts": status["counts"],
        "children_with_a_final": len(finals),
        "duplicate_finals": sum(count - 1 for count in finals.values()),
        "extra_refreshes": max(0, accepted - plan.packages),
        "accepted_refreshes": accepted,
    }


def _server_time_s(status: dict[str, Any]) -> float | None:
    started, finished = status.get("started_at"), status.get("finished_at")
    if not started or not finished:
        return None
    return round((datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds(), 2)


def _problems(rounds: list[dict[str, Any]], packages: int) -> list[str]:
    problems = []
    for index, pair in enumerate(rounds, 1):
        for result in (pair["baseline"], pair["killed"]):
            if not result["done"] or result["children_with_a_final"] != packages:
                problems.append(
                    f"round {index} {result['name']}: {result['state']}, "
                    f"{result['children_with_a_final']}/{packages} children final"
                )
            if result["duplicate_finals"] or result["extra_refreshes"]:
                problems.append(
                    f"round {index} {result['name']}: {result['duplicate_finals']} duplicate finals, "
                    f"{result['extra_refreshes']} extra refreshes"
                )
        if pair["killed"]["killed"] is None:
            problems.append(f"round {index}: the worker was never killed")
    return problems


def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """Start the servers, run `--rounds` pairs (baseline, killed), stop everything: (report, problems)."""
    begun = time.perf_counter()
    plan = Plan(args.packages, args.processes, args.threads, args.kill_at, args.timeout_s)
    rounds: list[dict[str, Any]] = []
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="sccm-refresh-bulk-kill-bench-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        rig = Rig.started(
            stack, workdir, auth=args.auth, max_concurrency=args.max_concurrency, worker_settings={}, say=say
        )
        max_ops = max(25, 4 * args.max_concurrency, args.processes * args.threads + 4)
        catalogue = Catalogue.start(
            args.packages, password=rig.password, auth_modes=AUTH_MODES, max_ops_per_user=max_ops
        )
        stack.callback(catalogue.emulator.stop)
        catalogue.set_latency_ms(args.latency_ms)
        for round_no in range(1, args.rounds + 1):
            baseline = measure(rig, catalogue, plan, name=f"base{round_no}", kill=False)
            killed = measure(rig, catalogue, plan, name=f"kill{round_no}", kill=True)
            difference = round(killed["time_to_done_s"] - baseline["time_to_done_s"], 2)
            rounds.append(
                {
                    "baseline": baseline,
                    "killed": killed,
                    "difference_s": difference,
                    "within_goal": killed["done"] and difference <= args.within_s,
                }
            )
    problems = _problems(rounds, args.packages)
    report = {
        "benchmark": "sccm-refresh bulk through the API, a worker SIGKILLed part-way, next to the same bulk without",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "parameters": {
            "packages": args.packages,
            "latency_ms": args.latency_ms,
            "max_concurrency": args.max_concurrency,
            "worker_processes": args.processes,
            "threads_per_worker": args.threads,
            "auth": args.auth,
            "kill_at": args.kill_at,
            "within_s": args.within_s,
            "rounds": args.rounds,
            "restart": "the killed worker is started again at once (systemd Restart=always)",
            "worker_settings": "shipped defaults (visibility timeout 3600 s, attempt lock 20 s, slot lease 30 s)",
            "emulator": f"subprocess; {args.packages} STORAGE_DIRECT packages selected, DistMgr instant, no faults",
        },
        "rounds": rounds,
        "goal": {
            "killed_within_s_of_baseline": args.within_s,
            "met": bool(rounds) and all(pair["within_goal"] for pair in rounds),
        },
        "ok": not problems,
        "problems": problems,
        "total_wall_s": round(time.perf_counter() - begun, 1),
    }
    return report, problems


def render_table(report: dict[str, Any]) -> str:
    """The rounds as a table: time to done, children final, duplicates, extra refreshes; the difference."""
    header = (
        f"{'bulk of ' + str(report['parameters']['packages']) + ' through the API':<38} | {'time to done (s)':>16} | "
    )
    header += f"{'children final':>14} | {'duplicate finals':>16} | {'extra refreshes':>15}"
    lines = [header, "-" * len(header)]
    for index, pair in enumerate(report["rounds"], 1):
        for result in (pair["baseline"], pair["killed"]):
            kill = result["killed"]
            label = "without a kill" if kill is None else f"worker SIGKILLed at {kill['finished_at_kill']} final"
            lines.append(
                f"{f'round {index}: {label}':<38} | {result['time_to_done_s']:>16.1f} | "
                f"{result['children_with_a_final']:>14} | {result['duplicate_finals']:>16} | "
                f"{result['extra_refreshes']:>15}"
            )
        verdict = "within" if pair["within_goal"] else "NOT within"
        within = report["parameters"]["within_s"]
        lines.append(f"{f'round {index}: difference':<38} | {pair['difference_s']:>+16.1f} | {verdict} {within:.0f} s")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bulk_kill_bench",
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--packages", type=int, default=DEFAULT_PACKAGES, help="bulk size")
    parser.add_argument("--latency-ms", type=float, default=DEFAULT_LATENCY_MS, help="emulator latency per operation")
    parser.add_argument("--max-concurrency", type=int, default=DEFAULT_MAX_CONCURRENCY, help="provider cap")
    parser.add_argument("--processes", type=int, default=DEFAULT_PROCESSES, help="worker processes")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="threads per worker process")
    parser.add_argument("--auth", choices=AUTH_MODES, default="ntlm", help="WinRM auth of the workers")
    parser.add_argument("--kill-at", type=float, default=DEFAULT_KILL_AT, help="share of children finished at the kill")
    parser.add_argument(
        "--within-s", type=float, default=DEFAULT_WITHIN_S, help="goal: killed run within this of baseline"
    )
    parser.add_argument("--rounds", type=int, default=1, help="baseline + killed pairs")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="bound of each bulk")
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    bounds = {"packages": (1, MAX_PACKAGES), "max_concurrency": (1, 256), "processes": (2, 16), "threads": (1, 64)}
    for name, (low, high) in {**bounds, "rounds": (1, 10)}.items():
        if not low <= getattr(args, name) <= high:
            parser.error(f"--{name.replace('_', '-')} must be in [{low}, {high}]")
    if not 0 < args.kill_at < 1:
        parser.error("--kill-at must be between 0 and 1")
    if not 0 <= args.latency_ms <= 10_000:
        parser.error("--latency-ms must be in [0, 10000]")
    if not 1 <= args.timeout_s <= 3600 or not 0 < args.within_s <= 3600:
        parser.error("--timeout-s and --within-s must be in (0, 3600]")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    return report_run(lambda: run(args), render_table)


if __name__ == "__main__":
    raise SystemExit(main())
