"""A full Redis (`maxmemory` reached under `noeviction`) stops nothing for good, and loses nothing.

Redis refuses every write that allocates: a worker's take (BLMOVE, the take script), a final
outcome's publication, a re-queue, a producer's LPUSH. Workers back off and keep running, the API
answers 503; once memory frees, both carry on by themselves and every request ends exactly once.
"""

from __future__ import annotations

import time
from typing import Any, Final

import pytest

from testing.fixtures_api import SUBMIT_TOKEN, ApiServer
from testing.fixtures_emulator import EMULATOR_USERNAME
from testing.fixtures_pipeline import Pipeline
from testing.redis_full import fill_redis, free_redis, redis_full
from testing.waiting import wait_until
from worker.stores.outcome_reader import read_stream

pytestmark = pytest.mark.integration

FULL_FOR_S: Final = 10.0
FINALS_TIMEOUT_S: Final = 60.0
# What the worker says when its broker Redis refuses a take (once a minute at most).
FULL_LINE: Final = "broker consumer paused: Redis is full"
DEFERRED_PUT_BACK: Final = "re-queued message(s) back on their queues"
# Celery's warning, with a traceback, for a task that rejected its message to have it re-queued.
REQUEUE_REFUSED: Final = "reject requeue=True: re-queue failed"


def test_a_worker_keeps_running_through_a_full_redis_and_ends_every_request_after(pipeline: Pipeline) -> None:
    """Redis full for 10 s while refreshes run, wait for a medium and queue: the worker neither exits nor spins.

    Finals that meet the full Redis are published once it has room; a re-queue it refused is put
    back then; requests still queued are taken then. Each request ends exactly once.
    """
    emulator = pipeline.emulators["PS1"]
    provider = emulator.provider
    medium = pipeline.package("PS1", pkg_source_flag=3, medium_ready=False)
    provider.set_medium_ready(medium["PackageID"], False)
    ready = _ready_packages(pipeline, 5, exclude=(medium["PackageID"],))
    admin = pipeline.redis()
    pid = pipeline.worker.pid
    try:
        waiting = pipeline.send(_kwargs(medium))
        assert wait_until(lambda: pipeline.held_retry_states(waiting) != [], timeout_s=15), _tail(pipeline)
        with emulator.hold_operations():
            running = [pipeline.send(_kwargs(pkg)) for pkg in ready]
            assert emulator.wait_in_flight(EMULATOR_USERNAME, 2, timeout_s=15), _tail(pipeline)
            fill_redis(admin)
        # Released: the attempts end, and their finals meet the full Redis; the waiting request's
        # countdowns keep ending too, and its re-queues are refused.
        started = time.monotonic()
        assert not wait_until(lambda: not pipeline.worker.alive(), timeout_s=FULL_FOR_S), _tail(pipeline)
        assert time.monotonic() - started >= FULL_FOR_S
        assert not pipeline.finals()
    finally:
        free_redis(admin)
        admin.close()
    provider.set_medium_ready(medium["PackageID"], True)

    everyone = [waiting, *running]
    assert wait_until(lambda: set(pipeline.finals()) >= set(everyone), timeout_s=FINALS_TIMEOUT_S), _tail(pipeline)
    finals = pipeline.finals()
    assert {rid: len(finals[rid]) for rid in everyone} == dict.fromkeys(everyone, 1)
    assert {finals[rid][0].status for rid in everyone} == {"accepted"}
    assert pipeline.worker.alive() and pipeline.worker.pid == pid
    log = pipeline.worker.output()
    assert FULL_LINE in log, _tail(pipeline)
    # The re-queues Redis refused were put back by the worker itself, not left to the visibility timeout.
    assert DEFERRED_PUT_BACK in log, _tail(pipeline)
    # Backing off is logged once a minute, not once per try, and never with a traceback: the only
    # tracebacks are Celery's own line for each refused re-queue (once per message, not per try).
    assert log.count(FULL_LINE) <= 2, _tail(pipeline)
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
