"""`sccm-refresh demo`: the main job end to end, on the embedded default.

1. Redis: the one named by SCCM_REFRESH_REDIS_URL, else our own redis-server on a free port.
2. The SMS Provider emulator (NTLM + message encryption over HTTP, like a default WinRM
   listener), with STORAGE_COMPRESS packages whose source medium is not ready and a few
   injected 503s / quota faults.
3. A real Celery worker process, configured only through SCCM_REFRESH_* variables (the
   password travels as a 0600 file, never in arguments or the environment).
4. Discover packages with WQL (Enumerate + Pull), enqueue one refresh each, follow the
   outcomes live over pub/sub; after a while the "operator" mounts the media, and the waiting
   refreshes complete. Ends with a summary read back from the outcome stream.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from celery import Celery
from redis import Redis

from cli.commands import format_outcome
from config.settings import ProviderSettings, RetryPolicy, Settings
from embedded.redis_server import ensure_redis
from embedded.worker_process import WorkerProcess, worker_environment
from emulator.server import Emulator
from emulator.settings import EmulatorSettings, FaultRates
from tasks.enqueue import enqueue_refresh
from worker.app import REFRESH_TASK, create_app
from worker.constants import RedisKeys
from worker.outcome_reader import OutcomeSubscription, read_stream, subscribe
from worker.outcomes import Outcome
from worker.packages import PACKAGE_CLASSES, TASK_SEQUENCE_CLASS
from worker.redis_client import redis_from_url
from worker.sccm import SccmClient
from worker.transport import ProviderTransport
from worker.wql import package_query

__all__ = ["run_demo"]

SITE_CODE = "PS1"
DEMO_DIR = Path(".sccm-refresh")
USERNAME = "LAB\\sccm-svc"


def _say(text: str) -> None:
    print(text, flush=True)


def run_demo(*, packages: int, timeout_s: float, medium_ready_after_s: float, seed: int) -> int:
    if packages < 1 or packages > 5000:
        raise SystemExit("sccm-refresh: error: --packages must be between 1 and 5000")
    run_id = uuid.uuid4().hex[:8]
    workdir = (DEMO_DIR / f"demo-{run_id}").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        redis_url, server = ensure_redis(os.environ.get("SCCM_REFRESH_REDIS_URL"), data_dir=workdir / "redis")
        if server is not None:
            stack.callback(server.close)
            _say(f"[redis]    started an embedded redis-server (pid {server.pid}) at {redis_url}")
        else:
            _say(f"[redis]    using SCCM_REFRESH_REDIS_URL ({redis_url.split('@')[-1]})")

        password = secrets.token_urlsafe(18)
        emulator = Emulator(
            EmulatorSettings(
                port=0,
                site_code=SITE_CODE,
                username=USERNAME,
                password=password,
                auth_modes=("ntlm",),
                package_count=packages,
                seed=seed,
                compress_share=0.25,
                medium_not_ready_share=1.0,
                distmgr_delay_s=0.5,
                fault_rates=FaultRates(http_503=0.03, quota_fault=0.02),
            )
        ).start()
        stack.callback(emulator.stop)
        _say(f"[emulator] SMS Provider for site {SITE_CODE} at {emulator.url} (NTLM + message encryption)")

        password_file = workdir / "sccm-password"
        password_file.touch(mode=0o600)
        password_file.write_text(password, encoding="utf-8")
        prefix = f"demo-{run_id}"
        queue = f"sccm-refresh-demo-{run_id}"
        env = _worker_env(redis_url, emulator.url, password_file, prefix, queue)
        worker = WorkerProcess(env, queue=queue, pool="threads", concurrency=8, log_file=workdir / "worker.log")
        worker.start()
        stack.callback(worker.stop)
        _say(f"[worker]   celery worker pid {worker.pid}, queue {queue!r}, log {workdir / 'worker.log'}")

        settings = Settings(broker_url=redis_url, redis_url=redis_url, key_prefix=prefix, queue=queue, providers={})
        producer = create_app(settings)
        provider = ProviderSettings(
            endpoint=emulator.url, transport="ntlm", username=USERNAME, password_file=password_file
        )
        targets = _discover(provider)
        _say(f"[discover] WQL over Enumerate+Pull found {len(targets)} packages")

        redis = redis_from_url(redis_url)
        keys = RedisKeys(prefix)
        with subscribe(redis, keys) as live:
            expected = _enqueue_all(producer, queue, targets)
            _say(f"[enqueue]  {len(expected)} refresh requests sent; outcomes follow (live, Redis pub/sub)\n")
            finals = _follow(live, emulator, expected, timeout_s=timeout_s, medium_ready_after_s=medium_ready_after_s)

        return _summarise(redis, keys=keys, emulator=emulator, expected=expected, finals=finals, workdir=workdir)
    return 1  # pragma: no cover - ExitStack does not swallow exceptions


def _worker_env(redis_url: str, endpoint: str, password_file: Path, prefix: str, queue: str) -> dict[str, str]:
    provider = {"endpoint": endpoint, "transport": "ntlm", "username": USERNAME, "password_file": str(password_file)}
    # Demo-sized waits: a medium is re-checked every 1-3 s instead of minutes.
    demo_waits = {
        "SCCM_REFRESH_RETRY__MEDIUM__MAX_ATTEMPTS": "60",
        "SCCM_REFRESH_RETRY__MEDIUM__INITIAL_BACKOFF_S": "1",
        "SCCM_REFRESH_RETRY__MEDIUM__MAX_BACKOFF_S": "3",
        "SCCM_REFRESH_RETRY__TRANSIENT__INITIAL_BACKOFF_S": "0.5",
        "SCCM_REFRESH_RETRY__TRANSIENT__MAX_BACKOFF_S": "2",
        "SCCM_REFRESH_LIMITS__VERIFY_TIMEOUT_S": "5",
        "SCCM_REFRESH_LIMITS__VERIFY_POLL_S": "0.25",
    }
    return worker_environment(
        redis_url=redis_url, key_prefix=prefix, queue=queue, providers={SITE_CODE: provider}, extra=demo_waits
    )


def _discover(provider: ProviderSettings) -> list[tuple[str, str, str]]:
    """(class, PackageID, Name) of every package, read with WQL like an admin script would."""
    client = SccmClient(
        ProviderTransport(SITE_CODE, provider),
        SITE_CODE,
        RetryPolicy(max_attempts=5, initial_backoff_s=0.2, max_backoff_s=1.0),
    )
    found: list[tuple[str, str, str]] = []
    try:
        for package_class in PACKAGE_CLASSES:
            for inst in client.enumerate(package_query(package_class, properties=("PackageID", "Name")), page_size=50):
                found.append((package_class, str(inst.properties["PackageID"]), str(inst.properties.get("Name"))))
    finally:
        client.transport.close()
    return found


def _enqueue_all(app: Celery, queue: str, targets: list[tuple[str, str, str]]) -> set[str]:
    expected: set[str] = set()
    # A hostile request sent straight to the queue (bypassing the producer's validation): the
    # worker refuses it at its own edge and reports it; nothing reaches a WMI selector.
    bad_id = f"req-demo-bad-{uuid.uuid4().hex[:8]}"
    app.send_task(
        REFRESH_TASK,
        kwargs={"site_code": SITE_CODE, "package_id": "PS100001' OR '1'='1", "request_id": bad_id},
        task_id=bad_id,
        queue=queue,
    )
    expected.add(bad_id)
    for package_class, package_id, _name in targets:
        force = False
        if package_class == TASK_SEQUENCE_CLASS:
            _say(f"[enqueue]  {package_id} is a task sequence package: sent without force, expect 'rejected'")
        request, _ = enqueue_refresh(
            app,
            queue=queue,
            site_code=SITE_CODE,
            package_id=package_id,
            package_class=package_class,
            verify=True,
            force=force,
            correlation_id="demo",
        )
        assert request.request_id is not None
        expected.add(request.request_id)
    return expected


def _follow(
    live: OutcomeSubscription, emulator: Emulator, expected: set[str], *, timeout_s: float, medium_ready_after_s: float
) -> dict[str, Outcome]:
    finals: dict[str, Outcome] = {}
    started = time.monotonic()
    media_mounted = False
    while len(finals) < len(expected):
        elapsed = time.monotonic() - started
        if elapsed > timeout_s:
            _say(f"\n[timeout]  {len(expected) - len(finals)} request(s) without a final outcome after {timeout_s}s")
            break
        if not media_mounted and elapsed >= medium_ready_after_s:
            mounted = emulator.provider.set_medium_ready(None, True)
            media_mounted = True
            _say(f"\n[operator] source media mounted for {len(mounted)} STORAGE_COMPRESS package(s)\n")
        outcome = live.get(timeout_s=0.5)
        if outcome is None or outcome.request_id not in expected:
            continue
        if outcome.final:
            finals[outcome.request_id] = outcome
        progress = f"[{len(finals):>{len(str(len(expected)))}}/{len(expected)} done]"
        _say(f"  {progress} {format_outcome(outcome)}")
    return finals


def _summarise(
    redis: Redis, *, keys: RedisKeys, emulator: Emulator, expected: set[str], finals: dict[str, Outcome], workdir: Path
) -> int:
    statuses = Counter(o.status for o in finals.values())
    stream_entries = read_stream(redis, keys, count=100_000)
    totals = emulator.provider.call_log()["totals"]
    _say("\n== summary ==")
    for status, count in sorted(statuses.items()):
        _say(f"  {status:<26} {count}")
    _say(f"  requests {len(expected)}, final outcomes {len(finals)}, outcome events in stream {len(stream_entries)}")
    _say(f"  provider saw: {totals}")
    _say(f"  outcomes kept in Redis under prefix {keys.prefix!r}: stream {keys.outcome_stream!r}")
    _say(f"  files: {workdir}/ (worker.log)")
    # "failed" is a legitimate outcome (e.g. a STORAGE_NO_SOURCE package has nothing to
    # refresh); the demo fails only if a request was left without its final outcome.
    ok = len(finals) == len(expected)
    _say("demo: OK, every request has exactly one final outcome" if ok else "demo: FAILED (see above)")
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo(packages=24, timeout_s=120, medium_ready_after_s=8, seed=7))
