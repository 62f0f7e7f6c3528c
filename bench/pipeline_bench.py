"""End-to-end refresh throughput and latency through the real pipeline (`python -m bench.pipeline_bench`).

    enqueue_refresh -> Redis (own redis-server, AOF everysec) -> `celery worker` subprocess
      (threads pool) -> pywinrm over HTTP -> SMS Provider emulator subprocess
      -> outcome stream, read back here: when did each request's final outcome arrive

Per auth mode (`basic`: Basic over HTTP with AllowUnencrypted; `ntlm`: NTLM + message
encryption), each scenario bounded by `--requests` and `--seconds`:

* direct: the same Get + Invoke RefreshPkgSource exchange done by `worker.provider.client.SccmClient` from
  this process with `--concurrency` threads (one ProviderTransport, so one pywinrm Protocol per
  thread), no Celery, no Redis: the provider-bound ceiling of this client on this machine;
* rejected: requests the worker refuses at validation (SMS_TaskSequencePackage without force;
  valid ids, so the package hash is written too): Celery + outcome publishing, zero WinRM;
* refresh: real refreshes of distinct STORAGE_DIRECT packages (Get + Invoke, accepted).

Every request of a scenario is enqueued at once (a burst, while the worker drains), so the
end-to-end latency is mostly queueing; `in_worker` is the task's own run. CPU per request comes
from /proc (worker process tree, emulator, redis-server) and getrusage (this process: producer,
stream reader and the worker-log reader, or the client threads of `direct`); the emulator's
own CPU per WS-Man operation from its /admin/stats. `busy_cores` = CPU per request x rate:
a process near 1.0 is bound by its GIL.

Prints one JSON document on stdout (progress on stderr); exit 0 when every scenario completed
with the statuses it expects, 1 otherwise (the JSON says what happened), 130 when interrupted.
Everything it starts is stopped by PID, on Ctrl-C and SIGTERM too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from celery import Celery

from bench.cli_common import (
    EXIT_INTERRUPTED,
    EXIT_PROBLEMS,
    choice_list,
    package_versions,
    private_file,
    say,
    sigterm_as_interrupt,
)
from bench.emulator_process import EmulatorProcess
from bench.final_collector import FinalCollector
from bench.measure import busy_cores, latency_summary_ms, process_tree_cpu_s, ratio, self_cpu_s
from config.settings import ProviderSettings, RetrySettings, Settings
from embedded.redis_server import RedisServer
from embedded.worker_process import WorkerProcess, worker_environment
from producers.enqueue import enqueue_refresh
from worker.app import create_app
from worker.domain.outcomes import STATUS_ACCEPTED, STATUS_REJECTED
from worker.domain.packages import REFUSED_CLASSES, TASK_SEQUENCE_CLASS
from worker.provider.client import SccmClient
from worker.provider.transport import ProviderTransport
from worker.stores.keys import RedisKeys
from worker.stores.redis_client import redis_from_url

__all__ = ["build_parser", "main", "run"]

AUTH_MODES: Final = ("basic", "ntlm")
SCENARIO_DIRECT: Final = "direct"
SCENARIO_REJECTED: Final = "rejected"
SCENARIO_REFRESH: Final = "refresh"

SITE_CODE: Final = "PS1"
USERNAME: Final = "LAB\\bench-svc"
STORAGE_DIRECT: Final = 2  # PkgSourceFlag: refreshed from its source path, always accepted
WSMAN_OPS_PER_REFRESH: Final = 2  # Get, then Invoke RefreshPkgSource

DEFAULT_REQUESTS: Final = 500
DEFAULT_CONCURRENCY: Final = 8
DEFAULT_SECONDS: Final = 12.0
DEFAULT_PACKAGES: Final = 2000
MAX_REQUESTS: Final = 20_000
MAX_CONCURRENCY: Final = 64
MAX_SECONDS: Final = 60.0
MIN_PACKAGES: Final = 20
# WinRM's per-user operation quota must not be what limits the benchmark.
MIN_OPS_PER_USER: Final = 25
# Warm-up per worker (not measured): enough requests that every pool thread most likely opens
# its WinRM session (NTLM: handshake + priming POST) and the producer its broker connection.
WARMUP_PER_THREAD: Final = 2
WARMUP_TIMEOUT_S: Final = 30.0
WORKER_READY_TIMEOUT_S: Final = 60.0


# -- CPU accounting -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _CpuSample:
    """CPU seconds used so far by each process that takes part (None: unknown, e.g. no /proc)."""

    this_process: float
    worker: float | None
    emulator_process: float | None
    redis_server: float | None

    def per_request_ms(self, later: _CpuSample, count: int) -> dict[str, float | None]:
        def delta(before: float | None, after: float | None) -> float | None:
            if before is None or after is None or count <= 0:
                return None
            return round((after - before) * 1000.0 / count, 3)

        return {
            "this_process": delta(self.this_process, later.this_process),
            "worker": delta(self.worker, later.worker),
            "emulator_process": delta(self.emulator_process, later.emulator_process),
            "redis_server": delta(self.redis_server, later.redis_server),
        }


def _cpu_report(before: _CpuSample, after: _CpuSample, count: int, requests_per_s: float) -> dict[str, Any]:
    per_request = {name: ms for name, ms in before.per_request_ms(after, count).items() if ms is not None}
    total_ms = round(sum(per_request.values()), 3)
    cores = os.cpu_count() or 1
    return {
        "ms_per_request": {**per_request, "all_processes": total_ms},
        "busy_cores": {name: busy_cores(ms, requests_per_s) for name, ms in per_request.items()},
        # If CPU were the only limit, the whole machine could do this many per second.
        "cpu_bound_ceiling_per_s": round(cores * 1000.0 / total_ms, 1) if total_ms > 0 else None,
    }


def _emulator_report(stats: Mapping[str, Any], requests_done: int) -> dict[str, Any]:
    operations = int(stats["operations"])
    return {
        "wsman_operations": operations,
        "operations_per_request": ratio(operations, requests_done),
        "cpu_ms_per_operation": stats["cpu_ms_per_operation"],
        "counters": stats["counters"],
    }


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


# -- what every scenario of one auth mode shares -------------------------------------------------


@dataclass
class _Mode:
    auth: str
    emulator: EmulatorProcess
    redis_url: str
    redis_pid: int | None
    keys: RedisKeys
    queue: str
    producer: Celery
    worker: WorkerProcess | None = None

    def cpu(self) -> _CpuSample:
        return _CpuSample(
            this_process=self_cpu_s(),
            worker=process_tree_cpu_s(self.worker.pid) if self.worker is not None else None,
            emulator_process=process_tree_cpu_s(self.emulator.pid),
            redis_server=process_tree_cpu_s(self.redis_pid),
        )


# -- pipeline scenarios (rejected, refresh) ------------------------------------------------------


def _request_kwargs(
    tag: str, package_ids: Sequence[str], classes: Mapping[str, str], *, task_sequence: bool
) -> list[dict[str, Any]]:
    return [
        {
            "site_code": SITE_CODE,
            "package_id": package_id,
            # The worker refuses a task sequence without force, before any WinRM: "rejected".
            "package_class": TASK_SEQUENCE_CLASS if task_sequence else classes[package_id],
            "request_id": f"{tag}-{index:05d}",
            "correlation_id": tag,
        }
        for index, package_id in enumerate(package_ids)
    ]


def _purge(mode: _Mode) -> None:
    """Drop what a timed-out scenario left queued, so it does not run into the next one."""
    with mode.producer.connection_for_write() as connection:
        connection.default_channel.queue_purge(mode.queue)


def _run_pipeline(
    mode: _Mode, kwargs_list: Sequence[Mapping[str, Any]], seconds: float, *, wsman_ops_per_request: int
) -> dict[str, Any]:
    """Enqueue every request as fast as the producer goes; time each until its final outcome arrives."""
    enqueued_at: dict[str, float] = {}
    with FinalCollector(mode.redis_url, mode.keys, (str(kw["request_id"]) for kw in kwargs_list)) as collector:
        mode.emulator.reset_stats()
        before = mode.cpu()
        started = time.perf_counter()
        deadline = started + seconds
        for kwargs in kwargs_list:
            if time.perf_counter() > deadline:
                break
            enqueued_at[str(kwargs["request_id"])] = time.perf_counter()
            enqueue_refresh(mode.producer, queue=mode.queue, **kwargs)
        enqueue_s = time.perf_counter() - started
        complete = collector.wait(deadline - time.perf_counter())
        after = mode.cpu()
    arrivals = dict(collector.arrivals)
    if not complete:
        _purge(mode)
    mode.emulator.settle(wsman_ops_per_request * len(arrivals))
    done = len(arrivals)
    wall_s = max((at for at, _ in arrivals.values()), default=started) - started
    return {
        "requests": len(kwargs_list),
        "enqueued": len(enqueued_at),
        "completed": done,
        "complete": complete,
        "statuses": dict(Counter(outcome.status for _, outcome in arrivals.values())),
        "wall_s": round(wall_s, 3),
        "requests_per_s": _rate(done, wall_s),
        "enqueue_per_s": _rate(len(enqueued_at), enqueue_s),
        "latency_ms": {
            "end_to_end": latency_summary_ms(
                (at - enqueued_at[rid]) * 1000.0 for rid, (at, _) in arrivals.items() if rid in enqueued_at
            ),
            "in_worker": latency_summary_ms(outcome.duration_ms for _, outcome in arrivals.values()),
        },
        "cpu": _cpu_report(before, after, done, _rate(done, wall_s)),
        "emulator": _emulator_report(mode.emulator.stats(), done),
    }


# -- the direct baseline -------------------------------------------------------------------------


@dataclass
class _ThreadTally:
    latencies_ms: list[float] = field(default_factory=list)
    return_values: Counter[int] = field(default_factory=Counter)
    last_done_at: float = 0.0
    error: BaseException | None = None


class _DirectRun:
    """Get + Invoke per package from N threads sharing one SccmClient (one Protocol per thread)."""

    def __init__(self, mode: _Mode, provider: ProviderSettings, work: Sequence[tuple[str, str]], threads: int) -> None:
        self._mode = mode
        self._client = SccmClient(ProviderTransport(SITE_CODE, provider), SITE_CODE, RetrySettings().in_call)
        self._work = work
        self._threads = threads
        self._warmed = threading.Barrier(threads + 1)
        self._go = threading.Event()
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._cursor = iter(work)
        self._deadline = 0.0
        self._tallies = [_ThreadTally() for _ in range(threads)]

    def _next(self) -> tuple[str, str] | None:
        with self._lock:
            if self._cancel.is_set() or time.perf_counter() > self._deadline:
                return None
            return next(self._cursor, None)

    def _thread_main(self, tally: _ThreadTally) -> None:
        client = self._client
        try:
            # Authenticate this thread's session (NTLM: handshake + priming POST) before timing.
            package_id, package_class = self._work[0]
            client.get_package(package_class, package_id)
            self._warmed.wait()
            self._go.wait()
            while (item := self._next()) is not None:
                package_id, package_class = item
                began = time.perf_counter()
                client.get_package(package_class, package_id)
                tally.return_values[client.refresh(package_class, package_id)] += 1
                tally.last_done_at = time.perf_counter()
                tally.latencies_ms.append((tally.last_done_at - began) * 1000.0)
        except BaseException as exc:  # reported by run()
            tally.error = exc
            self._warmed.abort()
        finally:
            client.transport.reset()  # closes this thread's session

    def _first_error(self) -> BaseException | None:
        return next((t.error for t in self._tallies if t.error is not None), None)

    def run(self, seconds: float) -> dict[str, Any]:
        emulator = self._mode.emulator
        emulator.reset_stats()  # idle now: only the warm-up Gets follow
        threads = [
            threading.Thread(target=self._thread_main, args=(tally,), name=f"direct-{i}", daemon=True)
            for i, tally in enumerate(self._tallies)
        ]
        for thread in threads:
            thread.start()
        try:
            try:
                self._warmed.wait(timeout=WARMUP_TIMEOUT_S)
            except threading.BrokenBarrierError:
                raise RuntimeError(f"direct warm-up failed: {self._first_error()!r}") from None
            emulator.settle(self._threads)
            emulator.reset_stats()
            before = self._mode.cpu()
            started = time.perf_counter()
            self._deadline = started + seconds
            self._go.set()
            for thread in threads:
                thread.join(seconds + WARMUP_TIMEOUT_S)
            after = self._mode.cpu()
        finally:
            self._cancel.set()
            self._go.set()
        if (error := self._first_error()) is not None:
            raise RuntimeError(f"direct exchange failed: {error!r}")
        return self._report(started, before, after)

    def _report(self, started: float, before: _CpuSample, after: _CpuSample) -> dict[str, Any]:
        latencies = [ms for tally in self._tallies for ms in tally.latencies_ms]
        return_values: Counter[int] = Counter()
        for tally in self._tallies:
            return_values.update(tally.return_values)
        done = len(latencies)
        self._mode.emulator.settle(WSMAN_OPS_PER_REFRESH * done)
        wall_s = max((tally.last_done_at for tally in self._tallies), default=started) - started
        return {
            "requests": len(self._work),
            "completed": done,
            "complete": done == len(self._work),
            "threads": self._threads,
            "return_values": {str(value): count for value, count in sorted(return_values.items())},
            "wall_s": round(wall_s, 3),
            "requests_per_s": _rate(done, wall_s),
            "latency_ms": {"get_and_invoke": latency_summary_ms(latencies)},
            "cpu": _cpu_report(before, after, done, _rate(done, wall_s)),
            "emulator": _emulator_report(self._mode.emulator.stats(), done),
        }


# -- one auth mode end to end --------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """Which packages the scenarios use: distinct within a scenario while the catalogue lasts."""

    warmup: list[str]
    measured: list[str]
    classes: dict[str, str]

    @classmethod
    def from_catalogue(cls, packages: Sequence[Mapping[str, Any]], *, warmup: int, requests: int) -> _Plan:
        plain = [
            str(p["PackageID"])
            for p in packages
            if p["PkgSourceFlag"] == STORAGE_DIRECT and p["class"] not in (TASK_SEQUENCE_CLASS, *REFUSED_CLASSES)
        ]
        if not plain:
            raise RuntimeError("the emulated catalogue has no STORAGE_DIRECT package")
        rest = plain[warmup:] or plain
        return cls(
            warmup=[plain[i % len(plain)] for i in range(warmup)],
            measured=[rest[i % len(rest)] for i in range(requests)],
            classes={str(p["PackageID"]): str(p["class"]) for p in packages},
        )


@dataclass(frozen=True)
class _Shared:
    """What every auth mode uses: the servers, the credentials, the plan, the arguments."""

    emulator: EmulatorProcess
    redis_server: RedisServer
    password_file: Path
    plan: _Plan
    args: argparse.Namespace
    run_id: str
    workdir: Path


def _worker_env(shared: _Shared, auth: str, keys: RedisKeys, queue: str) -> dict[str, str]:
    provider = {
        "endpoint": shared.emulator.url,
        "transport": auth,
        "username": USERNAME,
        "password_file": str(shared.password_file),
        # Basic over plain HTTP is what the benchmark measures (the emulator allows it).
        "allow_unencrypted": "true",
    }
    return worker_environment(
        redis_url=shared.redis_server.url, key_prefix=keys.prefix, queue=queue, providers={SITE_CODE: provider}
    )


def _problems(auth: str, results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What went wrong in an auth mode's scenarios (empty when each did what it should)."""
    problems = []
    direct = results[SCENARIO_DIRECT]
    if not direct["complete"] or set(direct["return_values"]) != {"0"}:
        problems.append(
            f"{auth}/direct: {direct['completed']}/{direct['requests']} done, ReturnValues {direct['return_values']}"
        )
    for scenario, status in ((SCENARIO_REJECTED, STATUS_REJECTED), (SCENARIO_REFRESH, STATUS_ACCEPTED)):
        result = results[scenario]
        if not result["complete"]:
            problems.append(f"{auth}/{scenario}: {result['completed']}/{result['requests']} finished in time")
        unexpected = {name: count for name, count in result["statuses"].items() if name != status}
        if unexpected:
            problems.append(f"{auth}/{scenario}: unexpected final statuses {unexpected}")
    return problems


def _ratios(direct: Mapping[str, Any], rejected: Mapping[str, Any], refresh: Mapping[str, Any]) -> dict[str, Any]:
    worker_refresh = refresh["cpu"]["ms_per_request"].get("worker")
    worker_rejected = rejected["cpu"]["ms_per_request"].get("worker")
    return {
        "refresh_vs_direct_throughput": ratio(refresh["requests_per_s"], direct["requests_per_s"]),
        "refresh_vs_rejected_throughput": ratio(refresh["requests_per_s"], rejected["requests_per_s"]),
        "refresh_vs_direct_cpu_all_processes": ratio(
            refresh["cpu"]["ms_per_request"]["all_processes"], direct["cpu"]["ms_per_request"]["all_processes"]
        ),
        # What the WS-Man exchange adds to a task in the worker, next to the same exchange alone.
        "worker_cpu_ms_added_by_wsman": (
            round(worker_refresh - worker_rejected, 3)
            if worker_refresh is not None and worker_rejected is not None
            else None
        ),
        "direct_client_cpu_ms": direct["cpu"]["ms_per_request"].get("this_process"),
    }


def _run_mode(auth: str, shared: _Shared) -> dict[str, Any]:
    args, plan = shared.args, shared.plan
    keys = RedisKeys(f"bench-{shared.run_id}-{auth}")
    queue = f"sccm-refresh-bench-{shared.run_id}-{auth}"
    url = shared.redis_server.url
    producer = create_app(Settings(broker_url=url, redis_url=url, key_prefix=keys.prefix, queue=queue, providers={}))
    mode = _Mode(auth, shared.emulator, url, shared.redis_server.pid, keys, queue, producer)
    tag = f"{shared.run_id}-{auth}"

    say(f"[{auth}] direct: {len(plan.measured)} Get+Invoke from {args.concurrency} threads, no Celery/Redis")
    provider = ProviderSettings(
        endpoint=shared.emulator.url,
        transport=auth,
        username=USERNAME,
        password_file=shared.password_file,
        allow_unencrypted=True,
    )
    work = [(package_id, plan.classes[package_id]) for package_id in plan.measured]
    direct = _DirectRun(mode, provider, work, args.concurrency).run(args.seconds)
    say(f"[{auth}]   {direct['requests_per_s']} refreshes/s")

    with ExitStack() as stack:
        stack.callback(producer.close)
        worker = WorkerProcess(
            _worker_env(shared, auth, keys, queue),
            queue=queue,
            pool="threads",
            concurrency=args.concurrency,
            log_file=shared.workdir / f"worker-{auth}.log",
        )
        stack.callback(worker.stop)
        worker.start(ready_timeout_s=WORKER_READY_TIMEOUT_S)
        mode.worker = worker
        say(f"[{auth}] celery worker pid {worker.pid} (threads x{args.concurrency}), queue {queue!r}")

        warmup_kwargs = _request_kwargs(f"{tag}-warm", plan.warmup, plan.classes, task_sequence=False)
        warmup = _run_pipeline(mode, warmup_kwargs, WARMUP_TIMEOUT_S, wsman_ops_per_request=WSMAN_OPS_PER_REFRESH)
        if not warmup["complete"]:
            raise RuntimeError(f"[{auth}] warm-up: {warmup['completed']}/{warmup['requests']} in {WARMUP_TIMEOUT_S} s")

        say(f"[{auth}] rejected: {len(plan.measured)} requests refused at validation (no WinRM)")
        rejected_kwargs = _request_kwargs(f"{tag}-rej", plan.measured, plan.classes, task_sequence=True)
        rejected = _run_pipeline(mode, rejected_kwargs, args.seconds, wsman_ops_per_request=0)
        say(f"[{auth}]   {rejected['requests_per_s']} requests/s")

        say(f"[{auth}] refresh: {len(plan.measured)} refreshes through the pipeline")
        refresh_kwargs = _request_kwargs(f"{tag}-ref", plan.measured, plan.classes, task_sequence=False)
        refresh = _run_pipeline(mode, refresh_kwargs, args.seconds, wsman_ops_per_request=WSMAN_OPS_PER_REFRESH)
        say(f"[{auth}]   {refresh['requests_per_s']} refreshes/s")

    return {
        SCENARIO_DIRECT: direct,
        SCENARIO_REJECTED: rejected,
        SCENARIO_REFRESH: refresh,
        "ratios": _ratios(direct, rejected, refresh),
    }


# -- the whole run -------------------------------------------------------------------------------


def _machine(redis_server: RedisServer) -> dict[str, Any]:
    client = redis_from_url(redis_server.url)
    try:
        server_version = client.info("server").get("redis_version")
    finally:
        client.close()
    libraries = package_versions(("celery", "kombu", "redis", "pywinrm", "pyspnego", "requests"))
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {**libraries, "redis-server": server_version},
    }


def _parameters(args: argparse.Namespace, plan: _Plan) -> dict[str, Any]:
    return {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "auth": list(args.auth),
        "max_seconds_per_scenario": args.seconds,
        "packages": args.packages,
        "distinct_packages_per_scenario": len(set(plan.measured)),
        "warmup_requests_per_worker": len(plan.warmup),
        "worker_pool": "threads",
        "redis_appendfsync": "everysec",
        "emulator": "subprocess; compress_share=0, distmgr_delay_s=0, no faults",
    }


def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """Start Redis and the emulator, run every auth mode, stop everything: (report, problems)."""
    run_id = uuid.uuid4().hex[:8]
    begun = time.perf_counter()
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="sccm-refresh-bench-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        redis_server = RedisServer(data_dir=workdir / "redis", appendfsync="everysec")
        stack.callback(redis_server.close)
        redis_server.start()
        say(f"[redis]    redis-server pid {redis_server.pid} at {redis_server.url}")

        password = secrets.token_urlsafe(18)
        password_file = stack.enter_context(private_file(workdir / "provider-password", password))
        emulator_args = ["--site-code", SITE_CODE, "--auth", ",".join(AUTH_MODES), "--allow-unencrypted"]
        emulator_args += ["--packages", str(args.packages), "--compress-share", "0", "--distmgr-delay-s", "0"]
        emulator_args += ["--max-ops-per-user", str(max(MIN_OPS_PER_USER, 2 * args.concurrency))]
        emulator = EmulatorProcess(username=USERNAME, password=password, emulator_args=emulator_args)
        stack.callback(emulator.stop)
        say(f"[emulator] pid {emulator.pid} at {emulator.url}, {args.packages} packages")

        plan = _Plan.from_catalogue(
            emulator.packages(), warmup=WARMUP_PER_THREAD * args.concurrency, requests=args.requests
        )
        shared = _Shared(emulator, redis_server, password_file, plan, args, run_id, workdir)
        results = {auth: _run_mode(auth, shared) for auth in args.auth}
        machine = _machine(redis_server)
    problems = [problem for auth, result in results.items() for problem in _problems(auth, result)]
    report = {
        "benchmark": "sccm-refresh pipeline: enqueue -> Redis -> celery worker -> WinRM (emulator) -> outcome stream",
        "machine": machine,
        "parameters": _parameters(args, plan),
        "results": results,
        "ok": not problems,
        "problems": problems,
        "total_wall_s": round(time.perf_counter() - begun, 1),
    }
    return report, problems


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipeline_bench",
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS, help="requests per scenario")
    parser.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="worker pool threads, and direct client threads"
    )
    parser.add_argument("--auth", type=choice_list(AUTH_MODES), default=AUTH_MODES, help="auth modes: basic, ntlm")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="time cap per scenario")
    parser.add_argument("--packages", type=int, default=DEFAULT_PACKAGES, help="packages in the emulated catalogue")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= MAX_REQUESTS:
        parser.error(f"--requests must be in [1, {MAX_REQUESTS}]")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        parser.error(f"--concurrency must be in [1, {MAX_CONCURRENCY}]")
    if not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be in (0, {MAX_SECONDS:.0f}]")
    if args.packages < MIN_PACKAGES:
        parser.error(f"--packages must be at least {MIN_PACKAGES}")
    try:
        with sigterm_as_interrupt():
            report, problems = run(args)
    except KeyboardInterrupt:
        say("interrupted: stopped every process it had started")
        return EXIT_INTERRUPTED
    print(json.dumps(report, indent=2), flush=True)
    for problem in problems:
        say(f"problem: {problem}")
    return EXIT_PROBLEMS if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
