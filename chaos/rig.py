"""The real pipeline a chaos scenario runs against, started and stopped in one place.

    producer (plain Celery client, or raw kombu) -> redis-server (own, AOF, fsync always)
      -> two `celery worker` processes (threads pool) -> pywinrm, NTLM + encryption over HTTP
      -> SMS Provider emulator (in this process: its call log and faults are read directly)
    outcomes -> the same Redis: stream + pub/sub + latest state; read back by an OutcomeLedger

Workers run with the shipped settings (visibility timeout, watch, attempt lock, provider slot
lease, alive TTL, time limits, provider timeouts): only the retry policies are test-sized
(RETRY_ENV), so a request that has to wait for a medium or a busy provider does so in seconds.
A message held by a killed or frozen worker comes back through the broker's own recovery (the
holder's alive key lapses), not through a short visibility timeout. Optionally a real Flower
watches the workers, so its answers can be searched for the password afterwards. Everything is
stopped by PID; logs and Redis' data stay in the scenario's work directory.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
import uuid
from collections.abc import Collection, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

from celery import Celery
from kombu.connection import Connection
from kombu.messaging import Producer
from redis import exceptions as redis_errors

from chaos.ledger import OutcomeLedger
from chaos.report import LATENESS_BOUND_S
from chaos.timeline import TIMELINE_FILE, Timeline, broker_lists
from config.settings import Settings
from embedded.redis_server import RedisServer
from embedded.worker_process import WorkerProcess, worker_environment
from emulator.server import Emulator
from emulator.settings import EmulatorSettings
from testing.fixtures_pipeline import FAST_RETRY_ENV, UNACKED_HASH
from testing.flower_process import FlowerProcess
from testing.kdc import MitKdc, kerberos_environment
from testing.leak_search import snapshot_redis
from worker.app import REFRESH_TASK, create_app
from worker.broker.transport import transport_options
from worker.stores.keys import RedisKeys
from worker.stores.redis_client import redis_from_url
from worker.stores.slots import parked_requests

__all__ = ["RETRY_ENV", "SITE_CODE", "USERNAME", "Rig", "RigConfig"]

SITE_CODE: Final = "PS1"
USERNAME: Final = "LAB\\chaos-svc"
# The same account over Kerberos (the emulator matches LAB\chaos-svc to it).
KERBEROS_REALM: Final = "LAB.TEST"
KERBEROS_PRINCIPAL: Final = f"chaos-svc@{KERBEROS_REALM}"
WORKER_NAMES: Final = ("chaos-a", "chaos-b")
_POLL_S: Final = 0.1
# What Celery logs (CRITICAL) when an error escapes its consumer's loop; it then shuts the worker down.
_UNRECOVERABLE: Final = "Unrecoverable error"
_FLOWER_PATHS: Final = ("/api/tasks", "/api/workers?refresh=1")
_SUPERVISE_POLL_S: Final = 0.5
# A poison message kills every worker that takes it: restarting forever would only burn CPU.
MAX_CRASH_RESTARTS: Final = 6
# The integration tests' retry policies (FAST_RETRY_ENV; its verify limits are not policies and stay
# shipped), with a patient medium: re-checked every 0.5-1 s up to 200 times, so a request is still
# waiting for its medium when a scenario breaks something.
RETRY_ENV: Final = {
    **{name: value for name, value in FAST_RETRY_ENV.items() if name.startswith("SCCM_REFRESH_RETRY__")},
    "SCCM_REFRESH_RETRY__MEDIUM__MAX_ATTEMPTS": "200",
    "SCCM_REFRESH_RETRY__MEDIUM__INITIAL_BACKOFF_S": "0.5",
    "SCCM_REFRESH_RETRY__MEDIUM__MAX_BACKOFF_S": "1",
}
# A drain gives up this long after the lateness bound has passed: a request not final by then
# is lost, and one final after the bound fails its row anyway.
DRAIN_GRACE_S: Final = 5.0


@dataclass(frozen=True)
class RigConfig:
    """What a scenario changes about the pipeline."""

    emulator: Mapping[str, Any] = field(default_factory=dict)  # EmulatorSettings overrides
    worker_env: Mapping[str, str] = field(default_factory=dict)  # extra SCCM_REFRESH_* settings
    concurrency: int = 4  # threads per worker process
    flower: bool = False
    # Restart a worker that died, as systemd's Restart=always would: a poison message then costs
    # its own request (and shows as crashes), not the rest of the run.
    supervise: bool = False
    # "kerberos": a real MIT KDC of the rig's own (testing/kdc.py), the emulator a Kerberos acceptor,
    # the workers logging on from a keytab; NTLM otherwise.
    auth: Literal["ntlm", "kerberos"] = "ntlm"


class Rig:
    """One private Redis, one emulator, two workers, a producer; `close()` stops them all."""

    def __init__(self, workdir: Path, config: RigConfig, *, seed: int) -> None:
        self.workdir = workdir
        self.config = config
        self.password = f"Chaos-{secrets.token_urlsafe(18)}"
        self.keys = RedisKeys(f"chaos-{uuid.uuid4().hex[:8]}")
        self.queue = f"q-{self.keys.prefix}"
        self._stack = ExitStack()
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start(seed)
        except BaseException:
            self._stack.close()
            raise

    def _start(self, seed: int) -> None:
        self.redis_server = RedisServer(data_dir=self.workdir / "redis", appendfsync="always").start()
        self._stack.callback(self.redis_server.stop)
        settings = replace(
            EmulatorSettings(host="127.0.0.1", port=0, site_code=SITE_CODE, username=USERNAME, seed=seed),
            auth_modes=("ntlm",),
            password=self.password,
        )
        password_file = self.workdir / "provider-password"
        password_file.touch(mode=0o600)
        password_file.write_text(self.password, encoding="utf-8")
        kerberos_env: dict[str, str] = {}
        if self.config.auth == "kerberos":
            settings, kerberos_env = self._kerberos_realm(settings)
        self.emulator = Emulator(replace(settings, **dict(self.config.emulator))).start()
        self._stack.callback(self.emulator.stop)
        provider = {
            "endpoint": self.emulator.url,
            "transport": "ntlm",
            "username": USERNAME,
            "password_file": str(password_file),
        }
        if self.config.auth == "kerberos":
            provider = {
                # HTTP/localhost: the SPN the emulator's keytab holds, derived from the endpoint.
                "endpoint": self.emulator.url.replace("127.0.0.1", "localhost"),
                "transport": "kerberos",
                "username": KERBEROS_PRINCIPAL,
                "keytab_file": str(self.workdir / "chaos-svc.keytab"),
            }
        self.worker_env = worker_environment(
            redis_url=self.redis_server.url,
            key_prefix=self.keys.prefix,
            queue=self.queue,
            providers={SITE_CODE: provider},
            extra={**RETRY_ENV, **kerberos_env, **self.config.worker_env},
        )
        self.last_send_epoch_s = time.time()
        self.workers = [
            WorkerProcess(
                self.worker_env,
                queue=self.queue,
                concurrency=self.config.concurrency,
                name=name,
                log_file=self.workdir / f"{name}.log",
            )
            for name in WORKER_NAMES
        ]
        for worker in self.workers:
            worker.start()
            self._stack.callback(worker.stop)
        self.crash_restarts = 0
        self._stop_supervisor = threading.Event()
        if self.config.supervise:
            supervisor = threading.Thread(target=self._supervise, name="chaos-supervisor", daemon=True)
            supervisor.start()
            self._stack.callback(supervisor.join, 30)
            self._stack.callback(self._stop_supervisor.set)
        self.flower: FlowerProcess | None = None
        if self.config.flower:
            self.flower = FlowerProcess(
                self.worker_env, log_file=self.workdir / "flower.log", auth_file=self.workdir / "flower-auth"
            ).start()
            self._stack.callback(self.flower.stop)
        self.producer: Celery = create_app(
            Settings(broker_url=self.redis_server.url, redis_url=self.redis_server.url, queue=self.queue)
        )
        self._stack.callback(self.producer.close)
        self.ledger = OutcomeLedger(self.redis_server.url, self.keys)
        self._stack.callback(self.ledger.close)
        # Where the requests stood each second: what a late row is explained from.
        timeline = Timeline(
            self.workdir / TIMELINE_FILE,
            self.redis_server.url,
            self.keys,
            queue=self.queue,
            inflight_prefix=self._inflight_prefix,
            site_code=SITE_CODE,
            extra=self._provider_counts,
            worker_pids=self._worker_pids,
        ).start()
        self._stack.callback(timeline.stop)

    def _worker_pids(self) -> dict[str, int]:
        return {worker.name: worker.pid for worker in self.workers if worker.alive()}

    def _provider_counts(self) -> dict[str, int]:
        totals = self.emulator.provider.call_totals()
        return {"provider_" + name: int(value) for name, value in totals.items() if isinstance(value, int)}

    def _kerberos_realm(self, settings: EmulatorSettings) -> tuple[EmulatorSettings, dict[str, str]]:
        """A KDC with the workers' account (its keytab) and the emulator's SPN; the realm's environment
        is set in this process (the emulator's acceptor runs here) and handed to the workers."""
        kdc = MitKdc(self.workdir / "kdc", realm=KERBEROS_REALM).start()
        self._stack.callback(kdc.stop)
        kdc.add_principal(KERBEROS_PRINCIPAL, password=self.password)
        kdc.add_principal("HTTP/localhost")
        kdc.keytab(self.workdir / "chaos-svc.keytab", KERBEROS_PRINCIPAL)
        service_keytab = kdc.keytab(self.workdir / "http.keytab", "HTTP/localhost")
        self._stack.enter_context(kerberos_environment(kdc.environment()))
        kerberos = replace(settings, auth_modes=("kerberos",), kerberos_keytab=str(service_keytab))
        return kerberos, kdc.environment()

    def _supervise(self) -> None:
        while not self._stop_supervisor.wait(_SUPERVISE_POLL_S):
            for worker in self.workers:
                if self.crash_restarts >= MAX_CRASH_RESTARTS:
                    return
                if not worker.alive() and not self._stop_supervisor.is_set():
                    self.crash_restarts += 1
                    # One that dies while starting is tried again at the next round.
                    with contextlib.suppress(RuntimeError):
                        worker.start()

    # -- producing ----------------------------------------------------------------------------

    def send(self, kwargs: Mapping[str, Any], *, task_id: str) -> None:
        """A plain Celery client's message: no producer-side validation."""
        self.producer.send_task(REFRESH_TASK, kwargs=dict(kwargs), task_id=task_id, queue=self.queue)
        self.last_send_epoch_s = time.time()

    def publish_raw(self, body: bytes, *, headers: Mapping[str, Any], content_type: str) -> None:
        """What a non-Python producer could put on our queue: any body, any content type."""
        # kombu ships no type information for these.
        with Connection(self.redis_server.url) as connection:  # type: ignore[no-untyped-call]
            Producer(connection.default_channel).publish(  # type: ignore[no-untyped-call]
                body,
                routing_key=self.queue,
                exchange="",
                headers=dict(headers),
                content_type=content_type,
                content_encoding="utf-8",
                retry=True,
            )
        self.last_send_epoch_s = time.time()

    # -- observing ----------------------------------------------------------------------------

    def broker_idle(self) -> bool:
        """Nothing queued, nothing in a consumer's in-flight list, nothing held unacked (running,
        prefetched or counting down), nothing parked for a provider slot: no message left that
        could produce an outcome."""
        client = redis_from_url(self.redis_server.url, retries=0, socket_timeout_s=2.0)
        try:
            queues, inflight = broker_lists(client, queue=self.queue, inflight_prefix=self._inflight_prefix)
            waiting = sum(client.llen(name) for name in (*queues, *inflight))
            # A request waiting for a provider slot is parked with its message in the slots' keys.
            if waiting or client.hlen(UNACKED_HASH):
                return False
            return parked_requests(client, self.keys) == 0
        except redis_errors.RedisError:
            return False  # Redis down (or refusing): its AOF may still hold messages
        finally:
            client.close()

    @property
    def _inflight_prefix(self) -> str:
        return str(transport_options(prefix=self.keys.prefix, main_queue=self.queue)["inflight_prefix"])

    def drain(
        self,
        expected: Collection[str],
        *,
        since_epoch_s: float | None = None,
        quiet_s: float = 2.0,
        until_all: bool = False,
    ) -> bool:
        """Read outcomes until every expected task id has a final and the broker has stayed idle
        for `quiet_s` (a late duplicate would still be on its way), or the broker stayed idle that
        long with some missing (nothing left that could finish them), or every worker is dead
        (with no supervisor to restart one), or LATENESS_BOUND_S plus
        DRAIN_GRACE_S passed since the latest of `since_epoch_s` (the end of the fault), the last
        send and the last new outcome: a request not final by then is lost (and one final later
        would have failed the row anyway); with `until_all`, stop as soon as every expected task
        id has a final. True when every one has."""
        wanted = set(expected)
        progress_epoch_s = max(since_epoch_s or 0.0, self.last_send_epoch_s)
        idle_since: float | None = None
        while True:
            now = time.time()
            if self.ledger.poll():
                progress_epoch_s = max(progress_epoch_s, now)
            deadline = progress_epoch_s + LATENESS_BOUND_S + DRAIN_GRACE_S
            if until_all and wanted <= self.ledger.final_task_ids():
                break
            if not self.config.supervise and not any(worker.alive() for worker in self.workers):
                break  # every worker dead, none to be restarted: nothing can finish what is left
            if self.broker_idle():
                idle_since = idle_since if idle_since is not None else now
                if now - idle_since >= quiet_s:
                    break
            else:
                idle_since = None
            if now >= deadline:
                break
            time.sleep(_POLL_S)  # Redis state of other processes: no event to await
        self.ledger.poll()
        return wanted <= self.ledger.final_task_ids()

    def consumers_stopped(self) -> dict[str, str]:
        """Workers whose log says Celery stopped their consumer on an error ("Unrecoverable error: ..."):
        name -> that line. Such a process may live on for a while without taking anything."""
        stopped: dict[str, str] = {}
        for worker in self.workers:
            if worker.log_file is None or not worker.log_file.exists():
                continue
            for line in worker.log_file.read_text(encoding="utf-8", errors="replace").splitlines():
                if _UNRECOVERABLE in line:
                    stopped[worker.name] = line.strip()[:300]
                    break
        return stopped

    def finals_seen(self) -> int:
        """Task ids with a final outcome so far (reads what arrived since the last look)."""
        self.ledger.poll()
        return len(self.ledger.final_task_ids())

    def accepted_refreshes(self) -> dict[str, int]:
        """Accepted RefreshPkgSource calls per PackageID, from the emulator's call log."""
        packages: dict[str, dict[str, Any]] = self.emulator.provider.call_log()["packages"]
        return {package_id: int(entry["accepted"]) for package_id, entry in packages.items()}

    def catalogue(self) -> list[dict[str, Any]]:
        return self.emulator.provider.packages()

    def evidence(self) -> dict[str, bytes | str]:
        """Everything a leaked password could sit in: every Redis key and value, the worker logs,
        and (when running) Flower's answers and log."""
        blobs: dict[str, bytes | str] = {}
        try:
            blobs.update(
                {f"redis {where}": value for where, value in snapshot_redis(self.redis_server.url).blobs.items()}
            )
        except redis_errors.RedisError as exc:
            blobs["redis unavailable"] = type(exc).__name__
        for worker in self.workers:
            if worker.log_file is not None and worker.log_file.exists():
                blobs[f"{worker.name} log"] = worker.log_file.read_bytes()
        if self.flower is not None:
            for path in _FLOWER_PATHS:
                blobs[f"flower {path}"] = self.flower.api(path).text
            blobs["flower /metrics"] = self.flower.get("/metrics").text
            blobs["flower log"] = self.flower.log_text()
        return blobs

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
