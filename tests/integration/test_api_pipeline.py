"""The HTTP API in front of the real pipeline: a uvicorn process, Redis, a Celery worker, emulators.

Requests go in through `POST /v1/refreshes`; tests follow them to their final outcome through
`GET /v1/refreshes/{id}` and through `GET /v1/events` (Server-Sent Events), including a
reconnect with Last-Event-ID, and compare with what the outcome stream holds.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from celery import Celery

from testing.fixtures_api import (
    OTHER_SUBMIT_TOKEN,
    READ_TOKEN,
    SUBMIT_TOKEN,
    ApiServer,
    SseEvent,
    api_environment,
    iter_sse,
    write_token_file,
)
from testing.fixtures_pipeline import Pipeline
from testing.waiting import wait_until
from worker.stores.coalesce import Coalescer
from worker.stores.outcome_reader import read_stream

pytestmark = pytest.mark.integration

FINAL_WAIT_S = 60.0


def packages(pipeline: Pipeline, site: str, count: int, **wanted: Any) -> list[dict[str, Any]]:
    """`count` distinct catalogue packages of a site with the given properties."""
    found: list[dict[str, Any]] = []
    for _ in range(count):
        found.append(pipeline.package(site, exclude=tuple(p["PackageID"] for p in found), **wanted))
    return found


def item(site: str, pkg: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"site_code": site, "package_id": pkg["PackageID"], "package_class": pkg["class"], **extra}


def outcomes(events: Iterator[SseEvent]) -> Iterator[SseEvent]:
    return (e for e in events if e.event == "outcome")


def collect_finals(events: Iterator[SseEvent], request_ids: set[str]) -> list[SseEvent]:
    """Outcome events until every request in `request_ids` has its final one."""
    seen: list[SseEvent] = []
    waiting = set(request_ids)
    for event in outcomes(events):
        assert event.data is not None
        outcome = json.loads(event.data)
        seen.append(event)
        if outcome["final"]:
            waiting.discard(outcome["request_id"])
        if not waiting:
            return seen
    raise AssertionError(f"no final outcome for {sorted(waiting)}; saw {len(seen)} events")


def submit(client: httpx.Client, items: list[dict[str, Any]], **headers: str) -> list[dict[str, Any]]:
    response = client.post("/v1/refreshes", json={"packages": items}, headers=headers)
    assert response.status_code == 202, response.text
    refreshes: list[dict[str, Any]] = response.json()["refreshes"]
    return refreshes


def test_one_refresh_is_followed_to_its_final_outcome_via_sse_and_get(
    pipeline: Pipeline, pipeline_api: ApiServer
) -> None:
    """POST one package: its events arrive over SSE and GET shows the same final event."""
    pkg = pipeline.package("BS1", pkg_source_flag=2)
    with pipeline_api.client(SUBMIT_TOKEN) as client:
        events = iter_sse(client, "/v1/events", deadline_s=FINAL_WAIT_S)
        next(events)  # the stream is open (its start position fixed) before we submit
        response = client.post("/v1/refreshes", json={"packages": [item("BS1", pkg)]})
        assert response.status_code == 202, response.text
        [submitted] = response.json()["refreshes"]
        request_id = submitted["request_id"]
        assert response.headers["Location"] == f"/v1/refreshes/{request_id}"
        assert submitted["package_id"] == pkg["PackageID"] and submitted["joins"] is None
        seen = collect_finals(events, {request_id})
        mine = [e for e in seen if json.loads(e.data or "{}")["request_id"] == request_id]
        final = json.loads(mine[-1].data or "")
        assert final["status"] == "accepted"

        state = client.get(f"/v1/refreshes/{request_id}")
        assert state.status_code == 200, state.text
        body = state.json()
        assert body["final"] is True and body["status"] == "accepted"
        assert body["stream_id"] == mine[-1].id
        assert body["outcome"] == final
        package = client.get(f"/v1/sites/bs1/packages/{pkg['PackageID'].lower()}")
        assert package.status_code == 200
        assert package.json()["request_id"] == request_id and package.json()["site_code"] == "BS1"


def test_many_refreshes_in_one_call_all_reach_a_final_outcome(pipeline: Pipeline, pipeline_api: ApiServer) -> None:
    """One POST with several packages of two sites: each gets an id and exactly one final outcome."""
    correlation = f"corr-{uuid.uuid4().hex[:8]}"
    chosen = [item("BS1", p, correlation_id=correlation) for p in packages(pipeline, "BS1", 3, pkg_source_flag=2)]
    chosen += [item("PS1", p, correlation_id=correlation) for p in packages(pipeline, "PS1", 2, pkg_source_flag=2)]
    with pipeline_api.client(SUBMIT_TOKEN) as client:
        events = iter_sse(client, "/v1/events", params={"correlation_id": correlation}, deadline_s=FINAL_WAIT_S)
        next(events)
        submitted = submit(client, chosen)
        ids = {s["request_id"] for s in submitted}
        assert len(ids) == len(chosen)
        assert [s["package_id"] for s in submitted] == [c["package_id"] for c in chosen]
        seen = collect_finals(events, ids)
    finals = [json.loads(e.data or "") for e in seen if json.loads(e.data or "")["final"]]
    assert sorted(f["request_id"] for f in finals) == sorted(ids)
    assert {f["correlation_id"] for f in finals} == {correlation}


def test_sse_reconnect_with_last_event_id_misses_nothing_and_repeats_nothing(
    pipeline: Pipeline, pipeline_api: ApiServer
) -> None:
    """Disconnect after a few events, reconnect with Last-Event-ID: together, exactly the stream's events."""
    correlation = f"resume-{uuid.uuid4().hex[:8]}"
    # Medium-not-ready packages retry several times before they give up: events keep coming
    # while the client is away.
    slow = [
        item("BS1", p, correlation_id=correlation)
        for p in packages(pipeline, "BS1", 2, pkg_source_flag=3, medium_ready=False)
    ]
    quick = [item("BS1", p, correlation_id=correlation) for p in packages(pipeline, "BS1", 3, pkg_source_flag=2)]
    with pipeline_api.client(READ_TOKEN) as reader, pipeline_api.client(SUBMIT_TOKEN) as submitter:
        first = iter_sse(reader, "/v1/events", params={"correlation_id": correlation}, deadline_s=FINAL_WAIT_S)
        next(first)
        ids = {s["request_id"] for s in submit(submitter, slow + quick)}
        before: list[SseEvent] = []
        for event in outcomes(first):
            before.append(event)
            if len(before) == 3:
                break
        first.close()  # disconnect
        last_id = before[-1].id
        assert last_id is not None
        second = iter_sse(
            reader,
            "/v1/events",
            params={"correlation_id": correlation},
            headers={"Last-Event-ID": last_id},
            deadline_s=FINAL_WAIT_S,
        )
        after = collect_finals(second, ids - _finals_in(before))
    received = [(e.id, e.data) for e in before + after]
    redis = pipeline.outcome_redis()
    try:
        recorded = [
            (entry.stream_id, entry.outcome.to_json())
            for entry in read_stream(redis, pipeline.keys, count=1_000_000)
            if entry.outcome.correlation_id == correlation
        ]
    finally:
        redis.close()
    assert [json.loads(d or "") for _, d in received] == [json.loads(d) for _, d in recorded]
    assert [i for i, _ in received] == [i for i, _ in recorded]


def _finals_in(events: list[SseEvent]) -> set[str]:
    parsed = [json.loads(e.data or "") for e in events]
    return {o["request_id"] for o in parsed if o["final"]}


def test_a_retried_post_with_the_same_idempotency_key_returns_the_first_answer(
    pipeline: Pipeline, pipeline_api: ApiServer
) -> None:
    """Same key and body: same ids, same status, nothing enqueued twice; another body: 409."""
    pkg = pipeline.package("BS1", pkg_source_flag=2)
    key = f"key-{uuid.uuid4()}"
    body = {"packages": [item("BS1", pkg)]}
    with pipeline_api.client(SUBMIT_TOKEN) as client:
        events = iter_sse(client, "/v1/events", params={"site_code": "BS1"}, deadline_s=FINAL_WAIT_S)
        next(events)
        first = client.post("/v1/refreshes", json=body, headers={"Idempotency-Key": key})
        again = client.post("/v1/refreshes", json=body, headers={"Idempotency-Key": key})
        assert first.status_code == again.status_code == 202
        assert again.json() == first.json()
        assert again.headers.get("Idempotent-Replayed") == "true" and "Idempotent-Replayed" not in first.headers
        assert again.headers["Location"] == first.headers["Location"]
        other = client.post(
            "/v1/refreshes", json={"packages": [item("BS1", pkg, verify=True)]}, headers={"Idempotency-Key": key}
        )
        assert other.status_code == 409
        [submitted] = first.json()["refreshes"]
        collect_finals(events, {submitted["request_id"]})
    redis = pipeline.outcome_redis()
    try:
        mine = [
            e for e in read_stream(redis, pipeline.keys, count=1_000_000) if e.outcome.package_id == pkg["PackageID"]
        ]
    finally:
        redis.close()
    assert {e.outcome.request_id for e in mine if e.outcome.request_id == submitted["request_id"]} == {
        submitted["request_id"]
    }
    assert sum(1 for e in mine if e.outcome.final and e.outcome.request_id == submitted["request_id"]) == 1


def test_concurrent_retries_with_one_idempotency_key_enqueue_once(pipeline: Pipeline, pipeline_api: ApiServer) -> None:
    """Eight simultaneous POSTs with one key: one enqueues; the rest replay it or are told to retry (409)."""
    pkg = pipeline.package("BS1", pkg_source_flag=2)
    key = f"race-{uuid.uuid4()}"
    body = {"packages": [item("BS1", pkg)]}
    barrier = threading.Barrier(8)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def post() -> None:
        with pipeline_api.client(SUBMIT_TOKEN) as client:
            barrier.wait(timeout=10)
            response = client.post("/v1/refreshes", json=body, headers={"Idempotency-Key": key})
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    statuses = sorted(a.status_code for a in answers)
    assert len(answers) == 8 and set(statuses) <= {202, 409}
    originals = [a for a in answers if a.status_code == 202 and "Idempotent-Replayed" not in a.headers]
    assert len(originals) == 1
    ids = {a.json()["refreshes"][0]["request_id"] for a in answers if a.status_code == 202}
    assert len(ids) == 1
    assert all("Retry-After" in a.headers for a in answers if a.status_code == 409)


def test_a_request_for_a_package_with_a_pending_leader_reports_whom_it_joins(
    pipeline: Pipeline, pipeline_api: ApiServer
) -> None:
    """With a pending refresh leading the package, the answer's `joins` names that request."""
    pkg = pipeline.package("PS1", pkg_source_flag=2)
    leader = f"leader-{uuid.uuid4().hex[:8]}"
    redis = pipeline.outcome_redis()
    coalescer = Coalescer(redis, pipeline.keys)
    try:
        coalescer.claim("PS1", pkg["PackageID"], leader, {"request_id": leader}, ttl_s=60)
        with pipeline_api.client(SUBMIT_TOKEN) as client:
            [joined] = submit(client, [item("PS1", pkg)])
            [own] = submit(client, [item("BS1", pipeline.package("BS1", pkg_source_flag=2))])
        assert joined["joins"] == leader
        assert own["joins"] is None
    finally:
        coalescer.close("PS1", pkg["PackageID"], leader)
        redis.close()


def test_two_callers_reusing_one_request_id_each_get_their_own_refresh_and_read_it_back(
    pipeline: Pipeline, pipeline_api: ApiServer
) -> None:
    """svc-submit and svc-other both send request_id deploy-42 (two packages): both refresh, each GET is its own."""
    mine, theirs = packages(pipeline, "BS1", 2, pkg_source_flag=2)
    with pipeline_api.client(SUBMIT_TOKEN) as first, pipeline_api.client(OTHER_SUBMIT_TOKEN) as second:
        [a] = submit(first, [item("BS1", mine, request_id="deploy-42")])
        assert a["request_id"] == "svc-submit:deploy-42"
        assert wait_until(lambda: a["request_id"] in pipeline.finals(), timeout_s=FINAL_WAIT_S)
        [b] = submit(second, [item("BS1", theirs, request_id="deploy-42")])
        assert b["request_id"] == "svc-other:deploy-42"
        assert wait_until(lambda: b["request_id"] in pipeline.finals(), timeout_s=FINAL_WAIT_S)
        read_a = first.get("/v1/refreshes/deploy-42").json()
        read_b = second.get("/v1/refreshes/deploy-42").json()
    finals = pipeline.finals()
    assert [o.status for o in finals[a["request_id"]]] == ["accepted"]
    assert [o.status for o in finals[b["request_id"]]] == ["accepted"]
    assert read_a["request_id"] == a["request_id"] and read_a["outcome"]["package_id"] == mine["PackageID"]
    assert read_b["request_id"] == b["request_id"] and read_b["outcome"]["package_id"] == theirs["PackageID"]
    assert read_a["status"] == read_b["status"] == "accepted"
    with pipeline_api.client(READ_TOKEN) as reader:
        assert reader.get("/v1/refreshes/deploy-42").status_code == 404  # not the reader's own
        assert reader.get(f"/v1/refreshes/{a['request_id']}").json()["outcome"]["package_id"] == mine["PackageID"]


def test_readiness_sees_the_worker_consuming_the_queue(pipeline_api: ApiServer) -> None:
    """/readyz: Redis and broker answer, and the pipeline's worker consumes our queue."""
    with pipeline_api.client() as client:
        response = client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready" and body["redis"] and body["broker"] and body["workers"] >= 1


def test_a_read_token_may_read_but_not_submit(pipeline: Pipeline, pipeline_api: ApiServer) -> None:
    """Role `read`: GETs answer, POSTs are 403 with an insufficient_scope challenge."""
    pkg = pipeline.package("BS1", pkg_source_flag=2)
    with pipeline_api.client(READ_TOKEN) as client:
        refused = client.post("/v1/refreshes", json={"packages": [item("BS1", pkg)]})
        assert refused.status_code == 403
        assert "insufficient_scope" in refused.headers["WWW-Authenticate"]
        assert client.get("/v1/refreshes/never-submitted").status_code == 404


def test_task_sent_events_when_asked_come_from_celerys_publish(
    pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`API__TASK_SENT_EVENTS=true`: the request goes through Celery, its task-sent event is seen."""
    tmp = tmp_path_factory.mktemp("api-sent")
    tokens = write_token_file(tmp / "tokens", {"svc-submit": (SUBMIT_TOKEN, "submit")})
    env = api_environment(
        redis_url=pipeline.redis_url,
        key_prefix=pipeline.keys.prefix,
        queue=pipeline.queue,
        extra={"SCCM_REFRESH_API__TOKEN_FILE": str(tokens), "SCCM_REFRESH_API__TASK_SENT_EVENTS": "true"},
    )
    sent: list[str] = []
    listening = threading.Event()
    receivers: list[Any] = []
    listener = Celery("sent-listener", broker=pipeline.redis_url)

    def listen() -> None:
        with listener.connection() as connection:
            receiver = listener.events.Receiver(connection, handlers={"task-sent": lambda e: sent.append(e["uuid"])})
            receivers.append(receiver)
            listening.set()
            # Runs until `should_stop`, looking at it every second (kombu's safety interval).
            receiver.capture(limit=None, timeout=None, wakeup=False)

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert listening.wait(10)
    pkg = pipeline.package("BS1", pkg_source_flag=2)
    with ApiServer(env, tmp / "api.log") as server, server.client(SUBMIT_TOKEN) as client:
        time.sleep(0.5)  # the receiver's subscription is in place
        [submitted] = submit(client, [item("BS1", pkg)])
        request_id = submitted["request_id"]
        try:
            assert wait_until(lambda: request_id in sent, timeout_s=15), sent
        finally:
            for receiver in receivers:
                receiver.should_stop = True
            thread.join(timeout=10)
        assert wait_until(lambda: len(pipeline.finals().get(request_id, [])) == 1, timeout_s=FINAL_WAIT_S)
