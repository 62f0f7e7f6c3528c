"""What the bulk benchmark runs on: two redis-servers, emulators, worker processes, a producer.

    broker redis-server   Celery's messages only, so `INFO commandstats` counts kombu's commands
                          and nothing of ours (our Lua scripts' commands are counted there too)
    store redis-server    outcomes, bulk records, slots, fences (SCCM_REFRESH_REDIS_URL)
    emulators             one per catalogue size, in subprocesses (bench/emulator_process.py)
    workers               `celery worker` processes (embedded/worker_process.py), started fresh
                          for each measurement with their own key prefix and queue

Everything is stopped by PID. A `Catalogue` knows which packages a bulk selects: exactly
`count` STORAGE_DIRECT packages (one Invoke each, always accepted), chosen by criteria
(`pkg_source_flags` plus the surplus as `exclude_package_ids`); the surplus is `spare`, for
requests outside the bulk's selection.
"""

from __future__ import annotations

import math
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from celery import Celery

from bench.cli_common import private_file
from bench.emulator_process import EmulatorProcess
from bench.final_collector import FinalCollector
from bench.measure import broker_command_counts, process_tree_cpu_s
from config.settings import ProviderSettings, RetrySettings, Settings
from embedded.redis_server import RedisServer
from embedded.worker_process import WorkerProcess, worker_environment
from producers.enqueue import enqueue_refresh
from worker.app import create_app
from worker.domain.criteria import DEFAULT_PACKAGE_CLASSES
from worker.provider.client import SccmClient
from worker.provider.transport import ProviderTransport
from worker.stores.keys import RedisKeys
from worker.stores.redis_client import redis_from_url

__all__ = [
    "SITE_CODE",
    "STORAGE_DIRECT",
    "USERNAME",
    "BrokerCounts",
    "Catalogue",
    "Lane",
    "Rig",
]

SITE_CODE: Final = "PS1"
USERNAME: Final = "LAB\\bench-svc"
STORAGE_DIRECT: Final = 2  # PkgSourceFlag: refreshed from its source path, always accepted
REPO_ROOT: Final = Path(__file__).resolve().parents[1]
# The emulator's catalogue: 72% SMS_Package and SMS_DriverPackage (the classes a bulk selects by
# default), 4% STORAGE_NO_SOURCE (compress share 0), so about 69% are eligible. A little more,
# and the rest is spare.
_ELIGIBLE_SHARE: Final = 0.6
_MIN_SPARE: Final = 8
WORKER_READY_TIMEOUT_S: Final = 90.0
_DRAIN_POLL_S: Final = 0.01
# kombu's Redis transport: every delivered message sits in this hash until acked.
_KOMBU_UNACKED: Final = "unacked"
# Each message a worker takes is recorded by kombu in its unacked index: one ZADD per delivery
# (the worker's transport, worker/broker/transport.py, moves messages through in-flight lists with a
# Lua script and BLMOVE, so LPUSH counts moves as well as publishes). Events are PUBLISHes.
DELIVERY_COMMAND: Final = "zadd"
EVENT_COMMAND: Final = "publish"


@dataclass(frozen=True)
class Catalogue:
    """One emulator and the packages a bulk over it selects."""

    emulator: EmulatorProcess
    selected: tuple[str, ...]
    spare: tuple[str, ...]
    classes: Mapping[str, str]

    @classmethod
    def start(cls, count: int, *, password: str, auth_modes: Sequence[str], max_ops_per_user: int) -> Catalogue:
        packages = math.ceil((count + _MIN_SPARE) / _ELIGIBLE_SHARE)
        args = ["--site-code", SITE_CODE, "--auth", ",".join(auth_modes), "--allow-unencrypted"]
        args += ["--packages", str(packages), "--compress-share", "0", "--distmgr-time-per-package-s", "0"]
        args += ["--max-ops-per-user", str(max_ops_per_user)]
        emulator = EmulatorProcess(username=USERNAME, password=password, emulator_args=args)
        try:
            listing = emulator.packages()
            eligible = [
                str(p["PackageID"])
                for p in listing
                if p["PkgSourceFlag"] == STORAGE_DIRECT and p["class"] in DEFAULT_PACKAGE_CLASSES
            ]
            if len(eligible) < count + _MIN_SPARE:
                raise RuntimeError(f"the emulated catalogue has {len(eligible)} eligible packages, {count} needed")
            classes = {str(p["PackageID"]): str(p["class"]) for p in listing}
        except BaseException:
            emulator.stop()
            raise
        return cls(emulator, tuple(eligible[:count]), tuple(eligible[count:]), classes)

    def criteria(self) -> dict[str, Any]:
        """Bulk criteria that select exactly `selected` (the default classes)."""
        return {"site_code": SITE_CODE, "pkg_source_flags": [STORAGE_DIRECT], "exclude_package_ids": list(self.spare)}

    def set_latency_ms(self, latency_ms: float) -> None:
        self.emulator.admin("POST", "faults", {"latency_ms": latency_ms, "latency_distribution": "fixed"})

    def call_totals(self) -> dict[str, int]:
        totals: dict[str, int] = self.emulator.admin("GET", "calls/totals")["totals"]
        return totals

    def reset_concurrency(self) -> None:
        self.emulator.admin("POST", "concurrency/reset")

    def peak_concurrency(self) -> int:
        return int(self.emulator.admin("GET", "concurrency")["total"]["peak"])


@dataclass(frozen=True)
class BrokerCounts:
    """Calls per command on the broker Redis at one moment, and how many messages wait in our queue."""

    calls: Mapping[str, int]
    queued: int = 0

    def since(self, earlier: BrokerCounts) -> dict[str, int]:
        return {name: n - earlier.calls.get(name, 0) for name, n in self.calls.items() if n != earlier.calls.get(name)}


def broker_report(before: BrokerCounts, after: BrokerCounts, refreshes: int) -> dict[str, Any]:
    """Messages, deliveries and events the broker took, in total and per refresh."""
    delta = after.since(before)
    deliveries = delta.get(DELIVERY_COMMAND, 0)
    # Every message sent meanwhile was either taken by a worker or still waits in the queue.
    messages = deliveries + after.queued - before.queued
    events = delta.get(EVENT_COMMAND, 0)

    def per(value: int) -> float | None:
        return round(value / refreshes, 3) if refreshes > 0 else None

    return {
        "messages": messages,
        "messages_per_refresh": per(messages),
        "deliveries": deliveries,
        "deliveries_per_refresh": per(deliveries),
        "events": events,
        "events_per_refresh": per(events),
        "commands": delta,
        "how_counted": (
            "INFO commandstats on a broker redis-server that holds Celery's data only: messages = "
            "deliveries (kombu records each message a worker takes in its unacked index: one ZADD) "
            "plus the growth of our queue's length; events = PUBLISH (Celery events). kombu's Redis "
            "transport keeps ETA (countdown) messages in the worker, so no command marks an ETA"
        ),
    }


@dataclass
class Lane:
    """One measurement's own key prefix, queue, producer and worker processes."""

    rig: Rig
    catalogue: Catalogue
    name: str
    keys: RedisKeys
    queue: str
    settings: Settings
    producer: Celery
    workers: list[WorkerProcess] = field(default_factory=list)
    # The workers' environment (broker, store, prefix, queue, the site's provider): what an API in
    # front of this lane runs with.
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def worker_pids(self) -> list[int]:
        return [worker.pid for worker in self.workers]

    def worker_cpu_s(self) -> float | None:
        values = [process_tree_cpu_s(pid) for pid in self.worker_pids]
        return None if any(v is None for v in values) else sum(v for v in values if v is not None)

    def cpu_s(self) -> dict[str, float | None]:
        """CPU seconds so far: the workers, the emulator, each redis-server."""
        return {
            "workers": self.worker_cpu_s(),
            "emulator": process_tree_cpu_s(self.catalogue.emulator.pid),
            "broker_redis": process_tree_cpu_s(self.rig.broker.pid),
            "store_redis": process_tree_cpu_s(self.rig.store.pid),
        }

    def broker_counts(self) -> BrokerCounts:
        client = redis_from_url(self.rig.broker.url)
        try:
            return BrokerCounts(broker_command_counts(client.info("commandstats")), int(client.llen(self.queue)))
        finally:
            client.close()

    def refresh_singles(self, package_ids: Sequence[str], *, tag: str, timeout_s: float) -> dict[str, Any]:
        """Send single requests (Get + Invoke each) at once and wait for their finals."""
        ids = [f"{tag}-{index:04d}" for index in range(len(package_ids))]
        with FinalCollector(self.rig.store.url, self.keys, ids) as collector:
            for request_id, package_id in zip(ids, package_ids, strict=True):
                enqueue_refresh(
                    self.producer,
                    queue=self.queue,
                    site_code=SITE_CODE,
                    package_id=package_id,
                    package_class=self.catalogue.classes[package_id],
                    request_id=request_id,
                )
            if not collector.wait(timeout_s):
                raise RuntimeError(f"{self.name}: {len(collector.arrivals)}/{len(ids)} warm-up requests finished")
            return dict(collector.arrivals)

    def slot_hold_s(self) -> float | None:
        """The site's average provider-slot hold time (the slots' EWMA in Redis), None before any release."""
        client = redis_from_url(self.rig.store.url)
        try:
            value = client.hget(self.keys.slot_keys(SITE_CODE).stats, "ewma_hold_s")
        finally:
            client.close()
        return float(value) if value else None

    def wait_broker_drained(self, timeout_s: float) -> bool:
        """True once our queue is empty and no delivered message is unacked (every task done)."""
        client = redis_from_url(self.rig.broker.url)
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                with client.pipeline(transaction=False) as pipe:
                    pipe.llen(self.queue)
                    pipe.hlen(_KOMBU_UNACKED)
                    queued, unacked = pipe.execute()
                if queued == 0 and unacked == 0:
                    return True
                time.sleep(_DRAIN_POLL_S)  # another process's queue: there is no event to await
            return False
        finally:
            client.close()

    def worker_that_logged(self, text: str) -> WorkerProcess | None:
        return next((w for w in self.workers if any(text in line for line in w.lines)), None)


@dataclass
class Rig:
    """The servers every measurement shares, and the lanes started on them."""

    broker: RedisServer
    store: RedisServer
    password_file: Path
    workdir: Path
    auth: str
    max_concurrency: int
    # Extra SCCM_REFRESH_* settings of every worker (experiments; reported in the parameters).
    worker_settings: Mapping[str, str] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @classmethod
    def started(
        cls,
        stack: ExitStack,
        workdir: Path,
        *,
        auth: str,
        max_concurrency: int,
        worker_settings: Mapping[str, str],
        say: Callable[[str], None],
        shared_redis: bool = False,
    ) -> Rig:
        """Both redis-servers (or one for both roles, as shipped) and the provider password file.

        Each is stopped or deleted by `stack`.
        """
        servers = []
        for role in ("broker+store",) if shared_redis else ("broker", "store"):
            server = RedisServer(data_dir=workdir / f"redis-{role}", appendfsync="everysec")
            stack.callback(server.close)
            server.start()
            servers.append(server)
            say(f"[redis]    {role} redis-server pid {server.pid} at {server.url}")
        if shared_redis:
            servers.append(servers[0])
        password = secrets.token_urlsafe(18)
        password_file = stack.enter_context(private_file(workdir / "provider-password", password))
        return cls(servers[0], servers[1], password_file, workdir, auth, max_concurrency, dict(worker_settings))

    @property
    def password(self) -> str:
        return self.password_file.read_text(encoding="utf-8")

    def provider(self, catalogue: Catalogue) -> ProviderSettings:
        return ProviderSettings(
            endpoint=catalogue.emulator.url,
            transport=self.auth,
            username=USERNAME,
            password_file=self.password_file,
            allow_unencrypted=True,
            max_concurrency=self.max_concurrency,
        )

    def sccm_client(self, catalogue: Catalogue) -> SccmClient:
        """The worker's own SMS Provider client, for use from this process (one session per thread)."""
        return SccmClient(ProviderTransport(SITE_CODE, self.provider(catalogue)), SITE_CODE, RetrySettings().in_call)

    @contextmanager
    def lane(
        self,
        catalogue: Catalogue,
        name: str,
        *,
        processes: int,
        threads: int,
        extra_args: tuple[str, ...] = (),
    ) -> Iterator[Lane]:
        """Start `processes` workers for one measurement; stop them (by PID) when it ends."""
        tag = f"{self.run_id}-{name}"
        keys = RedisKeys(f"bench-{tag}")
        queue = f"sccm-refresh-bench-{tag}"
        settings = Settings(
            broker_url=self.broker.url, redis_url=self.store.url, key_prefix=keys.prefix, queue=queue, providers={}
        )
        producer = create_app(settings)
        env = self._worker_env(catalogue, keys, queue)
        lane = Lane(self, catalogue, name, keys, queue, settings, producer, env=env)
        with ExitStack() as stack:
            stack.callback(producer.close)
            for index in range(processes):
                worker = WorkerProcess(
                    env,
                    queue=queue,
                    pool="threads",
                    concurrency=threads,
                    name=f"bench-{name}-{index}",
                    log_file=self.workdir / f"worker-{tag}-{index}.log",
                    extra_args=extra_args,
                )
                stack.callback(worker.stop)
                worker.start(ready_timeout_s=WORKER_READY_TIMEOUT_S)
                lane.workers.append(worker)
            yield lane

    def _worker_env(self, catalogue: Catalogue, keys: RedisKeys, queue: str) -> dict[str, str]:
        provider = {
            "endpoint": catalogue.emulator.url,
            "transport": self.auth,
            "username": USERNAME,
            "password_file": str(self.password_file),
            # Basic over plain HTTP is allowed here (the emulator allows it); NTLM encrypts.
            "allow_unencrypted": "true",
            "max_concurrency": str(self.max_concurrency),
        }
        python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        extra = {**self.worker_settings, "SCCM_REFRESH_BROKER_URL": self.broker.url, "PYTHONPATH": python_path}
        return worker_environment(
            redis_url=self.store.url, key_prefix=keys.prefix, queue=queue, providers={SITE_CODE: provider}, extra=extra
        )
