"""A Redis that refuses writes stops nothing for good, and loses nothing.

Full (`maxmemory` reached under `noeviction`), unable to persist (MISCONF), turned replica by a
failover (READONLY) or short of replicas (NOREPLICAS), Redis refuses a worker's take (BLMOVE, the
take script), a final outcome's publication, a re-queue, a producer's LPUSH (the last three also
their deletions, and EXPIRE). Workers back off and keep running, the API answers 503 when Redis is
full; once Redis takes writes again, both carry on by themselves and every request ends exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from typing import Any, Final, Literal

import pytest
import redis

from testing.fixtures_api import SUBMIT_TOKEN, ApiServer
from testing.fixtures_emulator import EMULATOR_USERNAME
from testing.fixtures_pipeline import Pipeline
from testing.fixtures_redis import RedisServerFactory
from testing.redis_full import redis_full
from testing.redis_refusing import REFUSALS, Refusal, refusing_writes
from testing.waiting import wait_until
from worker.stores.outcome_reader import read_stream
from worker.stores.redis_full import FULL_DETAIL, MISCONF_DETAIL, NOREPLICAS_DETAIL, READONLY_DETAIL, write_refusal

pytestmark = pytest.mark.integration

FULL_FOR_S: Final = 10.0
FINALS_TIMEOUT_S: Final = 60.0
# What the worker says when its broker Redis refuses a take, or an ack or re-queue (each once a
# minute at most), per refusal. Which of the two meets it first depends on the moment: a consumer
# whose prefetch is full takes nothing.
DETAIL: Final[dict[str, str]] = {
    "full": FULL_DETAIL,
    "misconf": MISCONF_DETAIL,
    "readonly": READONLY_DETAIL,
    "noreplicas": NOREPLICAS_DETAIL,
}
PAUSED_LINE: Final[dict[str, str]] = {
    "full": "paused: Redis is full",
    **{refusal: f"paused: {DETAIL[refusal]}" for refusal in REFUSALS},
}
# The worker's path through a refusal is the same whichever way Redis refuses, once the refusal is
# recognised (checked for every way below, on a real server): the run end to end is done for a
# full Redis and for MISCONF, the one that also refuses a new connection's first command.
END_TO_END: Final[tuple[Refusal | Literal["full"], ...]] = ("full", "misconf")
DEFERRED_PUT_BACK: Final = "re-queued message(s) back on their queues"
# Celery's warning, with a traceback, for a task that rejected its message to have it re-queued.
REQUEUE_REFUSED: Final = "reject requeue=True: re-queue failed"


def _refusing(pipeline: Pipeline, admin: Any, refusal: Refusal | Literal["full"]) -> AbstractContextManager[None]:
    """The pipeline's Redis refusing writes in the block: full, or one of testing.redis_refusing's ways."""
    if refusal == "full":
        return redis_full(admin)
    return refusing_writes(admin, refusal, pipeline.redis_server.data_dir)


_WAITED_ON: list[str] = []


@pytest.mark.parametrize("refusal", ["full", *REFUSALS])
def test_each_way_a_real_redis_refuses_the_workers_writes_is_recognised_as_a_pause(
    redis_server_factory: RedisServerFactory, refusal: Refusal | Literal["full"]
) -> None:
    """BLMOVE (a take), EVAL (the take and ack scripts), LPUSH (a publish), SET (a lock) and XADD (an
    outcome) each answer the refusal, and each answer is read as that refusal, never as a crash."""
    server = redis_server_factory()
    admin = redis.Redis.from_url(server.url)
    client = redis.Redis.from_url(server.url)
    writes: dict[str, Callable[[], object]] = {
        "BLMOVE": lambda: client.blmove("q", "inflight", 1, "RIGHT", "LEFT"),
        "EVAL": lambda: client.eval("return redis.call('LPUSH', KEYS[1], 'x')", 1, "q"),
        "LPUSH": lambda: client.lpush("q", "message"),
        "SET": lambda: client.set("lock", "token", nx=True, ex=20),
        "XADD": lambda: client.xadd("outcomes", {"outcome": "{}"}),
        # kombu's restore of a rejected message is a MULTI: one queued before the refusal began is
        # refused at its EXEC (EXECABORT ... because of: OOM), and stopped a worker before.
        "EXEC": lambda: queued.execute_command("EXEC"),
    }
    client.lpush("q", "queued")  # BLMOVE moves only what exists
    # redis-py types execute_command as untyped: the raw MULTI / EXEC go through Any.
    queued: Any = redis.Redis.from_url(server.url, single_connection_client=True)
    queued.execute_command("MULTI")
    queued.execute_command("LPUSH", "q", "in a transaction")
    recognised: dict[str, str | None] = {}
    try:
        if refusal == "full":
            refusing: AbstractContextManager[None] = redis_full(admin)
        else:
            refusing = refusing_writes(admin, refusal, server.data_dir)
        with refusing:
            for name, write in writes.items():
                with pytest.raises(redis.RedisError) as raised:
                    write()
                recognised[name] = write_refusal(raised.value)
        assert client.lpush("q", "after") >= 1  # taken again once the block ends
    finally:
        queued.close()
        client.close()
        admin.close()
    assert recognised == dict.fromkeys(writes, DETAIL[refusal])


@pytest.mark.parametrize("refusal", END_TO_END)
def test_a_worker_keeps_running_through_a_redis_refusing_writes_and_ends_every_request_after(
    pipeline: Pipeline, refusal: Refusal | Literal["full"]
) -> None:
    """Redis refusing writes for 10 s while refreshes run, wait for a medium and queue: the worker neither exits
    nor spins.

    Finals that meet the refusal are published once Redis takes writes; a re-queue it refused is
    put back then; requests still queued are taken then. Each request ends exactly once.
    """
    emulator = pipeline.emulators["PS1"]
    provider = emulator.provider
    # One package per run of the module's pipeline: an earlier run left its medium ready.
    medium = pipeline.package("PS1", pkg_source_flag=3, exclude=tuple(_WAITED_ON))
    _WAITED_ON.append(medium["PackageID"])
    provider.set_medium_ready(medium["PackageID"], False)
    ready = _ready_packages(pipeline, 5, exclude=(medium["PackageID"],))
    admin = pipeline.redis()
    pid = pipeline.worker.pid
    log_before = len(pipeline.worker.output())
    try:
        waiting = pipeline.send(_kwargs(medium))
        assert wait_until(lambda: pipeline.held_retry_states(waiting) != [], timeout_s=15), _tail(pipeline)
        finals_before = set(pipeline.finals())
        with ExitStack() as refused:
            with emulator.hold_operations():
                running = [pipeline.send(_kwargs(pkg)) for pkg in ready]
                assert emulator.wait_in_flight(EMULATOR_USERNAME, 2, timeout_s=15), _tail(pipeline)
                refused.enter_context(_refusing(pipeline, admin, refusal))
            # Released: the attempts end, and their finals meet the refusal; the waiting request's
            # countdowns keep ending too, and its re-queues are refused.
            started = time.monotonic()
            assert not wait_until(lambda: not pipeline.worker.alive(), timeout_s=FULL_FOR_S), _tail(pipeline)
            assert time.monotonic() - started >= FULL_FOR_S
            if refusal != "misconf":  # MISCONF refuses even a new connection's PING: this client's too
                assert set(pipeline.finals()) == finals_before
    finally:
        admin.close()
    provider.set_medium_ready(medium["PackageID"], True)

    everyone = [waiting, *running]
    assert wait_until(lambda: set(pipeline.finals()) >= set(everyone), timeout_s=FINALS_TIMEOUT_S), _tail(pipeline)
    finals = pipeline.finals()
    assert {rid: len(finals[rid]) for rid in everyone} == dict.fromkeys(everyone, 1)
    assert {finals[rid][0].status for rid in everyone} == {"accepted"}
    assert pipeline.worker.alive() and pipeline.worker.pid == pid
    log = pipeline.worker.output()[log_before:]
    assert PAUSED_LINE[refusal] in log, _tail(pipeline)
    # The re-queues Redis refused were put back by the worker itself, not left to the visibility timeout.
    assert DEFERRED_PUT_BACK in log, _tail(pipeline)
    # Backing off is logged once a minute, not once per try, and never with a traceback: the only
    # tracebacks are Celery's own line for each refused re-queue (once per message, not per try).
    assert log.count(PAUSED_LINE[refusal]) <= 4, _tail(pipeline)
    assert "Unrecoverable error" not in log, _tail(pipeline)
    assert log.count("Traceback") == log.count(REQUEUE_REFUSED), _tail(pipeline)


def test_the_api_answers_503_while_redis_is_full_and_takes_requests_again_once_it_has_room(
    pipeline: Pipeline, pipeline_api: ApiServer
) -> None:
    """Full: a POST is 503 with Retry-After and a body that says why, keyed or not; /readyz says why.

    Room again: the same POST is 202 and ends accepted, /readyz is 200, with no restart of anything.
    """
    pkg = pipeline.package("PS1", pkg_source_flag=2)
    body = {"packages": [_kwargs(pkg)]}
    admin = pipeline.redis()
    try:
        with pipeline_api.client(SUBMIT_TOKEN, timeout=30) as client:
            with redis_full(admin):
                refused = client.post("/v1/refreshes", json=body)
                keyed = client.post("/v1/refreshes", json=body, headers={"Idempotency-Key": "full-then-room"})
                not_ready = client.get("/readyz")
            accepted = client.post("/v1/refreshes", json=body, headers={"Idempotency-Key": "full-then-room"})
            assert wait_until(lambda: client.get("/readyz").status_code == 200, timeout_s=15)
    finally:
        admin.close()

    for response in (refused, keyed):
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "5"
        assert "Redis is full (maxmemory reached" in response.json()["detail"]
    assert not_ready.status_code == 503
    assert not_ready.json()["redis"] is False
    assert any("Redis is full" in reason for reason in not_ready.json()["reasons"]), not_ready.json()
    assert accepted.status_code == 202, accepted.text
    request_id = accepted.json()["refreshes"][0]["request_id"]
    assert wait_until(lambda: request_id in pipeline.finals(), timeout_s=FINALS_TIMEOUT_S), _tail(pipeline)
    assert [final.status for final in pipeline.finals()[request_id]] == ["accepted"]


def _ready_packages(pipeline: Pipeline, count: int, *, exclude: tuple[str, ...]) -> list[dict[str, Any]]:
    packages: list[dict[str, Any]] = []
    for _ in range(count):
        found = pipeline.package("PS1", pkg_source_flag=2, exclude=(*exclude, *(p["PackageID"] for p in packages)))
        packages.append(found)
    return packages


def _kwargs(pkg: dict[str, Any]) -> dict[str, Any]:
    return {"site_code": "PS1", "package_id": pkg["PackageID"], "package_class": pkg["class"]}


def _tail(pipeline: Pipeline) -> str:
    client = pipeline.redis()
    try:
        events = [e.outcome.status for e in read_stream(client, pipeline.keys, count=1000)]
    finally:
        client.close()
    return f"events: {events}\nworker log tail:\n{pipeline.worker.output()[-6000:]}"
