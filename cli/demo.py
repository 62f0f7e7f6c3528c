"""`sccm-refresh demo`: the whole job end to end, on the embedded default, in under a minute.

1. Redis: the one named by SCCM_REFRESH_REDIS_URL, else our own redis-server on a free port.
2. The SMS Provider emulator standing in for SCCM: a few hundred packages over NTLM with message
   encryption, some STORAGE_COMPRESS whose source medium becomes ready after a while, the
   DistMgr model, a little latency and a few transient faults.
3. Two real Celery worker processes, configured only through SCCM_REFRESH_* variables (the
   password travels as a 0600 file, never in arguments or the environment).
4. The HTTP API (a generated token) and Flower (a generated login), each its own process.
5. Through the API: a few single refreshes of STORAGE_COMPRESS packages (they wait for their
   medium), then a bulk refresh of the site (the default classes: SMS_Package, SMS_DriverPackage)
   followed to every distribution point (`until: distributed`). The emulated site has five DPs
   (DP05 a pull DP); DP04 is offline, so each of its copies fails after two retries.
6. A live progress bar of the bulk with the DPs holding its packages back (the stragglers
   report), then a table of how every request ended, read back from the outcome stream, and the
   DP named as the straggler. `--keep` leaves everything running until Ctrl-C; otherwise
   everything stops.
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.server import LISTENING_PREFIX
from api.tokens import token_line
from embedded.redis_server import ensure_redis
from embedded.service_process import ServiceProcess, free_port
from embedded.worker_process import WorkerProcess, worker_environment
from emulator.server import Emulator
from emulator.settings import EmulatorSettings, FaultRates
from worker.domain.criteria import DEFAULT_PACKAGE_CLASSES
from worker.domain.outcomes import Outcome
from worker.stores.keys import RedisKeys
from worker.stores.outcome_reader import read_stream
from worker.stores.redis_client import redis_from_url

__all__ = ["run_demo"]

SITE_CODE = "PS1"
DEMO_DIR = Path(".sccm-refresh")
USERNAME = "LAB\\sccm-svc"
FLOWER_USER = "admin"
WORKERS = 2
THREADS = 8
PROVIDER_SLOTS = 8
SINGLES = 5  # STORAGE_COMPRESS packages refreshed on their own first (they wait for their medium)
OFFLINE_DP = "DP04"  # the injected fault: every copy to it fails, so it is the bulk's straggler
_POLL_S = 0.25
_HTTP_TIMEOUT_S = 10.0
# Plain text: "[redis]" and friends are labels here, not rich markup; long lines are not cut.
console = Console(highlight=False, markup=False, soft_wrap=True)


@dataclass(frozen=True)
class _Services:
    api_url: str
    token: str
    token_file: Path
    flower_url: str
    flower_login_file: Path


def run_demo(*, packages: int, timeout_s: float, medium_ready_after_s: float, seed: int, keep: bool = False) -> int:
    if packages < 10 or packages > 5000:
        raise SystemExit("sccm-refresh: error: --packages must be between 10 and 5000")
    run_id = uuid.uuid4().hex[:8]
    workdir = (DEMO_DIR / f"demo-{run_id}").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        redis_url, server = ensure_redis(os.environ.get("SCCM_REFRESH_REDIS_URL"), data_dir=workdir / "redis")
        if server is not None:
            stack.callback(server.close)
            console.print(f"[redis]    embedded redis-server (pid {server.pid}) at {redis_url}")
        else:
            console.print(f"[redis]    using SCCM_REFRESH_REDIS_URL ({redis_url.split('@')[-1]})")
        emulator = _emulator(packages, seed, medium_ready_after_s)
        stack.callback(emulator.stop)
        console.print(f"[emulator] SMS Provider for site {SITE_CODE} at {emulator.url}: {packages} packages, NTLM")

        env = _environment(redis_url, emulator, workdir, run_id)
        for number in range(WORKERS):
            worker = WorkerProcess(
                env, queue=env["SCCM_REFRESH_QUEUE"], concurrency=THREADS, log_file=workdir / f"worker-{number}.log"
            )
            worker.start()
            stack.callback(worker.stop)
            console.print(f"[worker]   celery worker pid {worker.pid} ({THREADS} threads)")
        services = _start_services(stack, env, workdir)
        console.print(f"[api]      {services.api_url}/docs  (bearer token in {services.token_file})")
        console.print(f"[flower]   {services.flower_url}  (login in {services.flower_login_file})")

        started = time.monotonic()
        expected, bulk_id = _submit(services, emulator)
        record, stragglers = _follow_bulk(services, bulk_id, timeout_s=timeout_s)
        summary = _summarise(redis_url, env["SCCM_REFRESH_KEY_PREFIX"], expected, bulk_id, timeout_s=timeout_s)
        ok = summary.show(bulk_id, record, stragglers, time.monotonic() - started)
        console.print(f"\nFlower: {services.flower_url}   API: {services.api_url}/docs   files: {workdir}")
        if keep:
            _wait_for_interrupt()
        return 0 if ok else 1
    return 1  # pragma: no cover - ExitStack does not swallow exceptions


def _emulator(packages: int, seed: int, medium_ready_after_s: float) -> Emulator:
    return Emulator(
        EmulatorSettings(
            port=0,
            site_code=SITE_CODE,
            username=USERNAME,
            password=secrets.token_urlsafe(18),
            auth_modes=("ntlm",),
            package_count=packages,
            seed=seed,
            compress_share=0.1,
            medium_not_ready_share=1.0,
            medium_ready_after_s=medium_ready_after_s,
            distmgr_threads=3,
            distmgr_time_per_package_s=0.02,
            dp_count=5,
            pull_dp_count=1,
            dp_copy_time_s=0.2,
            dp_retry_count=2,
            dp_retry_delay_s=0.5,
            dp_offline=(OFFLINE_DP,),
            latency_s=0.02,
            latency_distribution="uniform",
            fault_rates=FaultRates(http_503=0.02, connection_reset=0.02),
        )
    ).start()


def _environment(redis_url: str, emulator: Emulator, workdir: Path, run_id: str) -> dict[str, str]:
    password_file = workdir / "sccm-password"
    password_file.touch(mode=0o600)
    password_file.write_text(emulator.settings.password, encoding="utf-8")
    provider = {
        "endpoint": emulator.url,
        "transport": "ntlm",
        "username": USERNAME,
        "password_file": str(password_file),
        "max_concurrency": str(PROVIDER_SLOTS),
    }
    # Demo-sized waits: a medium is looked at again every 1-2 s instead of minutes.
    demo_waits = {
        "SCCM_REFRESH_RETRY__MEDIUM__INITIAL_BACKOFF_S": "1",
        "SCCM_REFRESH_RETRY__MEDIUM__MAX_BACKOFF_S": "2",
        "SCCM_REFRESH_RETRY__TRANSIENT__INITIAL_BACKOFF_S": "0.3",
        "SCCM_REFRESH_RETRY__TRANSIENT__MAX_BACKOFF_S": "1",
        "SCCM_REFRESH_LIMITS__BULK_PUMP_INTERVAL_S": "2",
        # No in-call retries: a transient fault re-queues the request, so the table can show it.
        "SCCM_REFRESH_RETRY__IN_CALL__MAX_ATTEMPTS": "1",
        # Following polls every 1-2 s (shipped: from a minute, backing off to half an hour) and
        # gives up after two minutes (shipped: a day); the per-site reads every second.
        "SCCM_REFRESH_FOLLOW__FIRST_POLL_S": "1",
        "SCCM_REFRESH_FOLLOW__MAX_POLL_S": "2",
        "SCCM_REFRESH_FOLLOW__SNAPSHOT_S": "1",
        "SCCM_REFRESH_FOLLOW__DEADLINE_S": "120",
    }
    return worker_environment(
        redis_url=redis_url,
        key_prefix=f"demo-{run_id}",
        queue=f"sccm-refresh-demo-{run_id}",
        providers={SITE_CODE: provider},
        extra=demo_waits,
    )


def _start_services(stack: ExitStack, env: dict[str, str], workdir: Path) -> _Services:
    token = secrets.token_urlsafe(24)
    token_file = workdir / "api-tokens"
    token_file.touch(mode=0o600)
    token_file.write_text(token_line(token, "submit", "demo") + "\n", encoding="utf-8")
    (workdir / "api-token").touch(mode=0o600)
    (workdir / "api-token").write_text(token + "\n", encoding="utf-8")
    api_env = {**env, "SCCM_REFRESH_API__TOKEN_FILE": str(token_file)}
    api = ServiceProcess(
        "api",
        ["api", "--host", "127.0.0.1", "--port", "0"],
        api_env,
        log_file=workdir / "api.log",
        ready_prefix=LISTENING_PREFIX,
    ).start()
    stack.callback(api.stop)

    login_file = workdir / "flower-login"
    login_file.touch(mode=0o600)
    login_file.write_text(f"{FLOWER_USER}:{secrets.token_urlsafe(12)}\n", encoding="utf-8")
    port = free_port()
    flower_url = f"http://127.0.0.1:{port}"
    flower = ServiceProcess(
        "flower",
        ["flower", "--address", "127.0.0.1", "--port", str(port), "--basic-auth-file", str(login_file)],
        env,
        log_file=workdir / "flower.log",
        probe_url=f"{flower_url}/healthcheck",
    ).start()
    stack.callback(flower.stop)
    return _Services(str(api.ready_line), token, workdir / "api-token", flower_url, login_file)


def _submit(services: _Services, emulator: Emulator) -> tuple[set[str], str]:
    """Single refreshes of a few STORAGE_COMPRESS packages, then the bulk: both through the API."""
    # Of the classes the bulk selects by default, so its children for them join the singles.
    packages = emulator.provider.packages()
    compress = [p for p in packages if p["PkgSourceFlag"] == 3 and p["class"] in DEFAULT_PACKAGE_CLASSES][:SINGLES]
    with _api(services) as http:
        singles = [
            {"site_code": SITE_CODE, "package_id": p["PackageID"], "package_class": p["class"]} for p in compress
        ]
        answer = _post(http, services, "/v1/refreshes", {"packages": singles}) if singles else {"refreshes": []}
        expected = {item["request_id"] for item in answer["refreshes"]}
        console.print(f"[submit]   {len(expected)} single refresh(es) of STORAGE_COMPRESS packages (medium not ready)")
        bulk = _post(http, services, "/v1/bulk-refreshes", {"site_code": SITE_CODE, "until": "distributed"})
    console.print(
        f"[submit]   bulk refresh {bulk['bulk_id']} of site {SITE_CODE} through POST /v1/bulk-refreshes,"
        f" followed to every DP ({OFFLINE_DP} is offline)"
    )
    return expected, str(bulk["bulk_id"])


def _follow_bulk(services: _Services, bulk_id: str, *, timeout_s: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The bulk's record and stragglers report once it finished, shown live meanwhile."""
    deadline = time.monotonic() + timeout_s
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    record: dict[str, Any] = {}
    stragglers: dict[str, Any] = {}
    progress = Progress(*columns, console=console)
    task = progress.add_task(f"bulk {bulk_id}", total=None)
    with _api(services) as http, Live(Group(progress), console=console, refresh_per_second=4) as live:
        while time.monotonic() < deadline:
            record = _get(http, f"{services.api_url}/v1/bulk-refreshes/{bulk_id}")
            stragglers = _get(http, f"{services.api_url}/v1/bulk-refreshes/{bulk_id}/stragglers")
            counts = record.get("counts") or {}
            progress.update(task, total=record.get("total"), completed=sum(counts.values()))
            progress.update(task, description=f"bulk {bulk_id}: {record.get('state')}")
            live.update(Group(progress, _dp_table(record, stragglers)))
            if record.get("finished_at"):
                break
            time.sleep(_POLL_S)
    console.print()
    return record, stragglers


def _get(http: requests.Session, url: str) -> dict[str, Any]:
    response = http.get(url, timeout=_HTTP_TIMEOUT_S)
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


def _dp_table(record: dict[str, Any], stragglers: dict[str, Any]) -> Table:
    """The DPs holding the bulk's packages back (GET /v1/bulk-refreshes/{id}/stragglers)."""
    distribution = record.get("distribution") or {}
    done = ", ".join(f"{n} {state}" for state, n in distribution.items() if n) or "none yet"
    table = Table(title=f"followed to every DP: {done}", show_header=True, title_justify="left")
    for column in ("DP", "holding back", "in flight", "retrying", "failed"):
        table.add_column(column, justify="left" if column == "DP" else "right")
    for row in stragglers.get("dps") or []:
        table.add_row(row["dp"], *(str(row[key]) for key in ("held", "waiting", "retrying", "failed")))
    if stragglers.get("held_at_source"):
        table.add_row("(source not updated yet)", str(stragglers["held_at_source"]), "", "", "")
    return table


def _summarise(redis_url: str, prefix: str, singles: set[str], bulk_id: str, *, timeout_s: float) -> _Summary:
    """How every request ended, read back from the durable stream (the singles may end last)."""
    redis = redis_from_url(redis_url)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            events = [e.outcome for e in read_stream(redis, RedisKeys(prefix), count=1_000_000)]
            finals = _finals(events)
            if singles <= set(finals) or time.monotonic() > deadline:
                break
            time.sleep(_POLL_S)
    finally:
        redis.close()
    ours = {rid for rid in finals if rid in singles or rid.startswith(f"{bulk_id}:")}
    waits = [o for o in events if o.status == "retrying" and o.request_id in ours]
    medium = {o.request_id for o in waits if (o.error or {}).get("kind") == "medium_not_ready"}
    return _Summary(
        statuses=Counter(finals[rid][0].status for rid in ours),
        retried={o.request_id for o in waits} - medium,
        medium=medium,
        joined={rid for rid in ours if finals[rid][0].joined_request_id},
        once=all(len(finals[rid]) == 1 for rid in ours) and singles <= ours,
        requests=len(ours),
    )


@dataclass(frozen=True)
class _Summary:
    statuses: Counter[str]
    retried: set[str]
    medium: set[str]
    joined: set[str]
    once: bool
    requests: int

    def show(self, bulk_id: str, record: dict[str, Any], stragglers: dict[str, Any], took_s: float) -> bool:
        statuses = self.statuses
        table = Table(title=f"demo: {self.requests} requests in {took_s:.1f} s", show_header=True)
        table.add_column("how they ended")
        table.add_column("requests", justify="right")
        refreshed = sum(statuses[s] for s in ("accepted", "source_updated", *_DISTRIBUTION_STATUSES))
        table.add_row("refreshed", str(refreshed))
        table.add_row("  of which retried after a transient error", str(len(self.retried)))
        table.add_row("  of which waited for their medium", str(len(self.medium)))
        if self.joined:
            table.add_row("  of which joined a pending refresh", str(len(self.joined)))
        for status, label in _DISTRIBUTION_STATUSES.items():
            if statuses[status]:
                table.add_row(f"  {label}", str(statuses[status]))
        labels = {
            "failed": "failed (e.g. STORAGE_NO_SOURCE: nothing to refresh)",
            "gave_up_medium_not_ready": "gave up: medium never ready",
            "rejected": "rejected",
            "cancelled": "cancelled",
        }
        for status, label in labels.items():
            if statuses[status]:
                table.add_row(label, str(statuses[status]))
        console.print(table)
        counts = record.get("counts") or {}
        console.print(f"bulk {bulk_id}: {record.get('state')}, {record.get('total')} packages, counts {counts}")
        worst = (stragglers.get("dps") or [None])[0]
        if worst is not None:
            console.print(f"straggler: {worst['dp']} holds {worst['held']} of the bulk's packages back")
        complete = bool(record.get("finished_at")) and sum(counts.values()) == record.get("total")
        ok = self.once and complete
        console.print("demo: OK, every request has exactly one final outcome" if ok else "demo: FAILED (see above)")
        return ok


_DISTRIBUTION_STATUSES = {
    "distributed": "on every DP (distributed)",
    "distributed_with_failures": "on every DP but failed ones (distributed_with_failures)",
    "distribution_timed_out": "not on every DP in time (distribution_timed_out)",
}


def _finals(events: list[Outcome]) -> dict[str, list[Outcome]]:
    finals: dict[str, list[Outcome]] = {}
    for outcome in events:
        if outcome.final:
            finals.setdefault(outcome.request_id, []).append(outcome)
    return finals


@contextmanager
def _api(services: _Services) -> Iterator[requests.Session]:
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {services.token}"
        yield http


def _post(http: requests.Session, services: _Services, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post(f"{services.api_url}{path}", json=body, timeout=_HTTP_TIMEOUT_S)
    if response.status_code != 202:
        raise SystemExit(f"sccm-refresh demo: the API answered {response.status_code} to POST {path}")
    answer: dict[str, Any] = response.json()
    return answer


def _wait_for_interrupt() -> None:
    console.print("--keep: everything keeps running; Ctrl-C stops it all")
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
