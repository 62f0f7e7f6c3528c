"""The whole pipeline for integration tests: real Redis, real Celery worker process, emulators.

    producer (send_task) -> Redis broker -> `celery worker` subprocess -> pywinrm over HTTP
        -> SMS Provider emulator;  outcomes -> Redis stream + pub/sub + latest-state hash

`Pipeline.refresh(...)` subscribes to the live channel first, enqueues one request, and
collects its events until the final one arrives: tests synchronise on outcomes, not sleeps.
Sites configured for the worker:

    PS1  NTLM + message encryption over HTTP      (emulator PS1)
    BS1  Basic over HTTP (AllowUnencrypted)       (emulator BS1)
    HS1  Basic over HTTPS, validated against the emulator's generated CA (emulator HS1)
    XP1  NTLM against PS1's emulator, wrong password
    HX1  HTTPS to HS1's emulator without its CA: certificate validation fails
    BL1  Basic to HS1's emulator with a password requests cannot encode (not Latin-1)
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from config.settings import Settings
from embedded.redis_server import RedisServer
from embedded.worker_process import WorkerProcess, worker_environment
from emulator.server import Emulator
from emulator.settings import EmulatorSettings
from producers.celery_message import task_message
from testing.fixtures_emulator import EMULATOR_PASSWORD, EMULATOR_USERNAME, make_emulator_settings
from worker.app import REFRESH_TASK, create_app
from worker.domain.outcomes import Outcome
from worker.domain.packages import REFUSED_CLASSES
from worker.stores.keys import RedisKeys
from worker.stores.outcome_reader import PackageState, latest_state, read_stream, subscribe
from worker.stores.redis_client import redis_from_url

__all__ = [
    "NON_LATIN1_PASSWORD",
    "SHORT_VISIBILITY_ENV",
    "UNACKED_HASH",
    "Pipeline",
    "RefreshRun",
    "fast_follow_env",
    "message_kwargs",
    "pipeline",
    "pipeline_factory",
]

WRONG_PASSWORD = "Not-The-Emulator-Pa55word"  # noqa: S105 - test credential for a local emulator
# requests cannot encode it for Basic (Latin-1 only): must fail as config, never leak.
NON_LATIN1_PASSWORD = "Sommer€2024-Geheim"  # noqa: S105 - test credential for a local emulator

# Test-sized retry policies: the medium is re-checked every ~0.3 s, gives up after 6 tries.
FAST_RETRY_ENV = {
    "SCCM_REFRESH_RETRY__IN_CALL__MAX_ATTEMPTS": "3",
    "SCCM_REFRESH_RETRY__IN_CALL__INITIAL_BACKOFF_S": "0.05",
    "SCCM_REFRESH_RETRY__IN_CALL__MAX_BACKOFF_S": "0.1",
    "SCCM_REFRESH_RETRY__TRANSIENT__MAX_ATTEMPTS": "5",
    "SCCM_REFRESH_RETRY__TRANSIENT__INITIAL_BACKOFF_S": "0.2",
    "SCCM_REFRESH_RETRY__TRANSIENT__MAX_BACKOFF_S": "0.5",
    "SCCM_REFRESH_RETRY__MEDIUM__MAX_ATTEMPTS": "6",
    "SCCM_REFRESH_RETRY__MEDIUM__INITIAL_BACKOFF_S": "0.3",
    "SCCM_REFRESH_RETRY__MEDIUM__MAX_BACKOFF_S": "0.5",
    "SCCM_REFRESH_LIMITS__VERIFY_TIMEOUT_S": "5",
    "SCCM_REFRESH_LIMITS__VERIFY_POLL_S": "0.1",
}


# Redelivery of an unacked message needs the visibility timeout to pass: crash and chaos tests
# shrink it. Medium retries every 0.5-1 s, patiently (a request must still be waiting when
# the test breaks something).
SHORT_VISIBILITY_ENV = {
    "SCCM_REFRESH_LIMITS__VISIBILITY_TIMEOUT_S": "6",
    "SCCM_REFRESH_LIMITS__MAX_COUNTDOWN_S": "2",
    "SCCM_REFRESH_TASK_SOFT_TIME_LIMIT_S": "3",
    "SCCM_REFRESH_TASK_TIME_LIMIT_S": "4",
    "SCCM_REFRESH_RETRY__MEDIUM__MAX_ATTEMPTS": "200",
    "SCCM_REFRESH_RETRY__MEDIUM__INITIAL_BACKOFF_S": "0.5",
    "SCCM_REFRESH_RETRY__MEDIUM__MAX_BACKOFF_S": "1",
    # A lost message is sent again a few seconds after its visibility timeout.
    "SCCM_REFRESH_LIMITS__WATCH_MARGIN_S": "3",
    "SCCM_REFRESH_LIMITS__WATCH_SWEEP_INTERVAL_S": "1",
}
UNACKED_HASH = "unacked"  # kombu's Redis transport: delivered, not yet acknowledged


@dataclass
class RefreshRun:
    """Everything one request produced, seen three ways."""

    request_id: str
    live: list[Outcome]  # pub/sub, in arrival order
    final: Outcome | None
    stream: list[Outcome] = field(default_factory=list)
    state: PackageState | None = None

    @property
    def statuses(self) -> list[str]:
        return [o.status for o in self.live]


@dataclass
class Pipeline:
    redis_server: RedisServer
    keys: RedisKeys
    queue: str
    emulators: dict[str, Emulator]
    worker: WorkerProcess
    producer: Celery
    password_files: dict[str, Path]
    # Outcomes go to the broker's Redis unless the pipeline was built with a separate one.
    outcome_server: RedisServer | None = None
    # Every worker process (the first is `worker`); more than one when asked for.
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def redis_url(self) -> str:
        return self.redis_server.url

    @property
    def outcome_redis_url(self) -> str:
        return (self.outcome_server or self.redis_server).url

    def redis(self) -> Any:
        """A client of the broker's Redis (also the outcome store unless separate)."""
        return redis_from_url(self.redis_url)

    def outcome_redis(self) -> Any:
        return redis_from_url(self.outcome_redis_url)

    @property
    def settings(self) -> Settings:
        """Producer-side settings of this pipeline (its Redis, key prefix and queue)."""
        url = self.outcome_redis_url
        return Settings(broker_url=self.redis_url, redis_url=url, key_prefix=self.keys.prefix, queue=self.queue)

    def finals(self) -> dict[str, list[Outcome]]:
        """Final outcomes in the stream, by request id (more than one would be a bug)."""
        by_request: dict[str, list[Outcome]] = {}
        for outcome in self.stream_outcomes():
            if outcome.final:
                by_request.setdefault(outcome.request_id, []).append(outcome)
        return by_request

    def stream_outcomes(self) -> list[Outcome]:
        """Every outcome in the durable stream, oldest first."""
        client = self.outcome_redis()
        try:
            return [e.outcome for e in read_stream(client, self.keys, count=1_000_000)]
        finally:
            client.close()

    def send(self, kwargs: dict[str, Any], *, request_id: str | None = None) -> str:
        """Enqueue raw kwargs (no producer-side validation: the worker's edge is under test)."""
        request_id = request_id or f"req-{uuid.uuid4().hex}"
        kwargs = {"request_id": request_id, **kwargs}
        self.producer.send_task(REFRESH_TASK, kwargs=kwargs, task_id=request_id, queue=self.queue)
        return request_id

    def refresh_message(self, site_code: str = "PS1") -> tuple[str, str]:
        """(request id, the raw message a worker's take holds) for a refresh of a new ready package.

        For tests that put a message where only the broker would (an in-flight list, say).
        """
        pkg = self.package(site_code, pkg_source_flag=2)
        request_id = f"req-{uuid.uuid4().hex}"
        kwargs = {
            "request_id": request_id,
            "site_code": site_code,
            "package_id": pkg["PackageID"],
            "package_class": pkg["class"],
        }
        return request_id, task_message(REFRESH_TASK, request_id, kwargs, queue=self.queue)

    def refresh(
        self,
        *,
        timeout_s: float = 30.0,
        on_event: Callable[[Outcome], None] | None = None,
        request_id: str | None = None,
        **kwargs: Any,
    ) -> RefreshRun:
        """Enqueue one request and collect its events until its final outcome (or the timeout)."""
        client = self.outcome_redis()
        try:
            with subscribe(client, self.keys) as live:
                rid = self.send(kwargs, request_id=request_id)
                events: list[Outcome] = []
                final: Outcome | None = None
                deadline = time.monotonic() + timeout_s
                while (remaining := deadline - time.monotonic()) > 0:
                    outcome = live.get(timeout_s=remaining)
                    if outcome is None:
                        break
                    if outcome.request_id != rid:
                        continue
                    events.append(outcome)
                    if on_event is not None:
                        on_event(outcome)
                    if outcome.final:
                        final = outcome
                        break
            stream = [e.outcome for e in read_stream(client, self.keys, count=100_000) if e.outcome.request_id == rid]
            state = None
            site, package = kwargs.get("site_code"), kwargs.get("package_id")
            if isinstance(site, str) and isinstance(package, str) and final is not None:
                try:
                    state = latest_state(client, self.keys, site, package)
                except ValueError:
                    state = None
            return RefreshRun(rid, events, final, stream, state)
        finally:
            client.close()

    def held_retry_states(self, request_id: str) -> list[dict[str, Any]]:
        """retry_state of the request's messages held unacked by a worker (a countdown in progress)."""
        client = self.redis()
        try:
            held = [message_kwargs(json.loads(raw)[0]) for raw in client.hvals(UNACKED_HASH)]
        finally:
            client.close()
        return [kw["retry_state"] for kw in held if kw.get("request_id") == request_id and kw.get("retry_state")]

    def package(
        self,
        site: str,
        *,
        pkg_source_flag: int,
        medium_ready: bool | None = None,
        package_class: str | None = None,
        exclude: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """A catalogue package of the site's emulator with the given properties (a refreshable class)."""
        for pkg in self.emulators[site].provider.packages():
            if pkg["PackageID"] in exclude or pkg["class"] == "SMS_TaskSequencePackage":
                continue
            if package_class is None and pkg["class"] in REFUSED_CLASSES:
                continue
            if pkg["PkgSourceFlag"] != pkg_source_flag:
                continue
            if medium_ready is not None and pkg["medium_ready"] is not medium_ready:
                continue
            if package_class is not None and pkg["class"] != package_class:
                continue
            return pkg
        raise LookupError(f"no package with PkgSourceFlag={pkg_source_flag} medium_ready={medium_ready} at {site}")


def message_kwargs(message: dict[str, Any]) -> dict[str, Any]:
    """The kwargs of a kombu message (Celery protocol 2: body = base64 JSON [args, kwargs, embed])."""
    _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    result: dict[str, Any] = kwargs
    return result


def worker_env(
    *,
    redis_url: str,
    keys: RedisKeys,
    queue: str,
    providers: dict[str, dict[str, str]],
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    return worker_environment(
        redis_url=redis_url,
        key_prefix=keys.prefix,
        queue=queue,
        providers=providers,
        extra={**FAST_RETRY_ENV, **(extra or {})},
    )


def fast_follow_env(deadline_s: float, **more: str) -> dict[str, str]:
    """Worker settings that follow to every DP in seconds: a poll and a per-site snapshot every half second."""
    return {
        "SCCM_REFRESH_FOLLOW__FIRST_POLL_S": "0.5",
        "SCCM_REFRESH_FOLLOW__MAX_POLL_S": "0.5",
        "SCCM_REFRESH_FOLLOW__DEADLINE_S": str(deadline_s),
        "SCCM_REFRESH_FOLLOW__SNAPSHOT_S": "0.5",
        "SCCM_REFRESH_FOLLOW__SNAPSHOT_WAIT_S": "2",
        **{f"SCCM_REFRESH_FOLLOW__{name.upper()}": value for name, value in more.items()},
    }


PipelineFactory = Callable[..., Pipeline]


@pytest.fixture(scope="module")
def pipeline_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineFactory]:
    """Build pipelines (own Redis, emulators, worker); everything is stopped at module end."""
    stops: list[Callable[[], object]] = []

    def build(
        *,
        emulator_overrides: dict[str, dict[str, Any]] | None = None,
        worker_extra_env: dict[str, str] | None = None,
        concurrency: int = 4,
        worker_args: tuple[str, ...] = (),
        separate_outcome_redis: bool = False,
        worker_processes: int = 1,
        extra_emulators: dict[str, EmulatorSettings] | None = None,
        extra_providers: Callable[[dict[str, Emulator]], dict[str, dict[str, str]]] | None = None,
    ) -> Pipeline:
        """`extra_emulators` join the three usual ones (by site code); `extra_providers(emulators)`
        adds worker sites that need the started emulators' URLs (e.g. Kerberos ones)."""
        tmp = tmp_path_factory.mktemp("pipeline")
        server = RedisServer(data_dir=tmp / "redis", appendfsync="always").start()
        stops.append(server.close)
        outcome_server = None
        if separate_outcome_redis:
            outcome_server = RedisServer(data_dir=tmp / "outcome-redis", appendfsync="always").start()
            stops.append(outcome_server.close)
        overrides = emulator_overrides or {}
        emulators = {
            "PS1": Emulator(make_emulator_settings(site_code="PS1", auth_modes=("ntlm",), **overrides.get("PS1", {}))),
            "BS1": Emulator(
                make_emulator_settings(
                    site_code="BS1", auth_modes=("basic",), allow_unencrypted=True, **overrides.get("BS1", {})
                )
            ),
            "HS1": Emulator(
                make_emulator_settings(
                    site_code="HS1", auth_modes=("basic",), tls="self-signed", **overrides.get("HS1", {})
                )
            ),
        }
        emulators.update({site: Emulator(settings) for site, settings in (extra_emulators or {}).items()})
        for emulator in emulators.values():
            emulator.start()
            stops.append(emulator.stop)
        good, bad, euro = tmp / "password", tmp / "wrong-password", tmp / "non-latin1-password"
        for path, secret in ((good, EMULATOR_PASSWORD), (bad, WRONG_PASSWORD), (euro, NON_LATIN1_PASSWORD)):
            path.touch(mode=0o600)
            path.write_text(secret, encoding="utf-8")
        keys = RedisKeys(f"t-{uuid.uuid4().hex[:8]}")
        queue = f"q-{keys.prefix}"
        common = {"username": EMULATOR_USERNAME, "operation_timeout_s": "5", "read_timeout_s": "8"}
        providers = {
            "PS1": {"endpoint": emulators["PS1"].url, "transport": "ntlm", "password_file": str(good), **common},
            "BS1": {
                "endpoint": emulators["BS1"].url,
                "transport": "basic",
                "password_file": str(good),
                "allow_unencrypted": "true",
                **common,
            },
            "XP1": {"endpoint": emulators["PS1"].url, "transport": "ntlm", "password_file": str(bad), **common},
            "HS1": {
                "endpoint": emulators["HS1"].url,
                "transport": "basic",
                "password_file": str(good),
                "ca_trust_path": str(emulators["HS1"].ca_cert_path),
                **common,
            },
            # Basic with a password requests cannot encode (read from a file, so only at use time).
            "BL1": {
                "endpoint": emulators["HS1"].url,
                "transport": "basic",
                "password_file": str(euro),
                "ca_trust_path": str(emulators["HS1"].ca_cert_path),
                **common,
            },
            # The same HTTPS listener without our CA: its certificate cannot be validated.
            "HX1": {"endpoint": emulators["HS1"].url, "transport": "basic", "password_file": str(good), **common},
        }
        if extra_providers is not None:
            providers.update(extra_providers(emulators))
        env = worker_env(redis_url=server.url, keys=keys, queue=queue, providers=providers, extra=worker_extra_env)
        if outcome_server is not None:
            env["SCCM_REFRESH_REDIS_URL"] = outcome_server.url
        workers = []
        for number in range(worker_processes):
            log_file = tmp / ("worker.log" if number == 0 else f"worker-{number}.log")
            worker = WorkerProcess(env, queue=queue, concurrency=concurrency, log_file=log_file, extra_args=worker_args)
            worker.start()
            stops.append(worker.stop)
            workers.append(worker)
        producer = create_app(Settings(broker_url=server.url, redis_url=server.url, queue=queue))
        return Pipeline(
            server,
            keys,
            queue,
            emulators,
            workers[0],
            producer,
            {"good": good, "bad": bad},
            outcome_server=outcome_server,
            workers=workers,
        )

    yield build
    for stop in reversed(stops):
        stop()


@pytest.fixture(scope="module")
def pipeline(pipeline_factory: PipelineFactory) -> Pipeline:
    """One shared pipeline per test module (tests must not leave faults set on its emulators)."""
    return pipeline_factory()
