"""Nothing is lost through Redis restarts, and the worker comes back on its own.

Redis here is the broker, the result backend and the outcome store at once, with an AOF
fsynced on every write (the pipeline default). The worker process is never restarted: after
each outage it must reconnect and keep consuming by itself (celery #8030 is the failure mode:
a worker that looks alive but no longer consumes). The tests' own pub/sub subscription dies
with Redis; as docs/outcomes.md prescribes, they re-subscribe and catch up from the stream.
"""

from __future__ import annotations

import json
import time
from typing import Any, Final

import pytest

from testing.fixtures_pipeline import SHORT_VISIBILITY_ENV, UNACKED_HASH, Pipeline, PipelineFactory, message_kwargs
from testing.waiting import wait_until
from worker.broker.transport import transport_options
from worker.domain.outcomes import Outcome
from worker.stores.outcome_reader import OutcomeSubscription, latest_state, read_stream, subscribe

pytestmark = pytest.mark.integration

# Celery's consumer logs this while it retries a lost broker connection.
RECONNECTING: Final = "Cannot connect to sccm-redis://"
FINAL_TIMEOUT_S: Final = 25.0
# Well under the 30 s alive TTL after which any consumer would restore a dead one's lists.
RETIRED_FINAL_TIMEOUT_S: Final = 15.0


def test_a_message_taken_just_before_a_redis_restart_is_delivered_once_the_worker_reconnects(
    pipeline_factory: PipelineFactory,
) -> None:
    """Moved into the worker's in-flight list, never recorded as unacked, then Redis restarts.

    The worker's next channel declares the closed one dead at its first take, so the message is
    back on the queue within seconds of the reconnect, not after the 30 s alive TTL (the chaos
    suite's Redis restart once counted one such request as lost when its run ended first).
    """
    pipeline = pipeline_factory()
    request_id, raw = pipeline.refresh_message()
    registry = (
        f"{transport_options(prefix=pipeline.keys.prefix, main_queue=pipeline.queue)['inflight_prefix']}:registry"
    )
    client = pipeline.redis()
    try:
        assert wait_until(lambda: _worker_inflight_list(client, registry, pipeline) is not None, timeout_s=10)
        stranded_in = _worker_inflight_list(client, registry, pipeline)
        assert stranded_in is not None
        # What a take interrupted by the connection loss leaves: the message in the live channel's list.
        client.lpush(stranded_in, raw)
    finally:
        client.close()
    pipeline.redis_server.stop()
    assert wait_until(lambda: RECONNECTING in pipeline.worker.output(), timeout_s=10), worker_tail(pipeline)
    pipeline.redis_server.start()
    assert wait_until(lambda: len(pipeline.finals().get(request_id, [])) == 1, timeout_s=RETIRED_FINAL_TIMEOUT_S), (
        worker_tail(pipeline)
    )
    (final,) = pipeline.finals()[request_id]
    assert final.status == "accepted"


def _worker_inflight_list(client: Any, registry: str, pipeline: Pipeline) -> str | None:
    """The in-flight list of the worker's consuming channel for the refresh queue, once registered."""
    for name in client.hkeys(registry):
        if f":{pipeline.worker.pid}:" in name and name.endswith(f"|{pipeline.queue}"):
            return str(name)
    return None


def test_waiting_refresh_survives_a_redis_kill_and_ends_exactly_once(pipeline_factory: PipelineFactory) -> None:
    """kill -9 Redis while a request waits for its medium (held unacked): after a restart it ends accepted, once."""
    pipeline = pipeline_factory(worker_extra_env=SHORT_VISIBILITY_ENV, concurrency=2)
    provider = pipeline.emulators["PS1"].provider
    pkg = pipeline.package("PS1", pkg_source_flag=3, medium_ready=False)
    provider.set_medium_ready(pkg["PackageID"], False)
    worker_pid = pipeline.worker.pid
    kwargs = {"site_code": "PS1", "package_id": pkg["PackageID"], "package_class": pkg["class"]}

    client = pipeline.redis()
    try:
        live = subscribe(client, pipeline.keys)
        request_id = pipeline.send(kwargs)
        first = next_event(live, request_id, timeout_s=10)
        assert first is not None and first.status == "retrying", first
        # Given the retry message held by the worker, unacked, counting down to its next attempt,
        # and the first delivery acked (until then a crash brings that back too, as attempt 1),
        assert wait_until(lambda: pipeline.held_retry_states(request_id) != [], timeout_s=5)
        assert wait_until(lambda: all(kw.get("retry_state") for kw in broker_copies(pipeline, request_id)), timeout_s=5)

        # when Redis crashes, stays down until the worker has torn down its broker connection
        # (so nothing can be restored to a live Redis on the way), and comes back,
        pipeline.redis_server.kill()
        live.close()  # its connection died with the server: pub/sub kept nothing for us meanwhile
        assert wait_until(lambda: RECONNECTING in pipeline.worker.output(), timeout_s=10), worker_tail(pipeline)
        pipeline.redis_server.start()
        # the AOF (fsync always) still holds the message (held, or already back in the queue),
        assert broker_copies(pipeline, request_id) != []

        # and once the medium is mounted the request ends: seen live after re-subscribing, or
        # caught up from the durable stream (subscribe first, then read, so nothing falls between).
        live = subscribe(client, pipeline.keys)
        try:
            provider.set_medium_ready(pkg["PackageID"], True)
            final = await_final(pipeline, live, request_id, timeout_s=FINAL_TIMEOUT_S)
        finally:
            live.close()
    finally:
        client.close()

    assert final is not None, f"no final outcome; worker log tail:\n{worker_tail(pipeline)}"
    assert final.status == "accepted", final.to_dict()
    assert final.attempt >= 2  # attempts continued from the retry state, they did not restart
    # Exactly once: nothing of the request is left in the broker to run again, and the stream,
    # the latest state and the final marker all name the one final outcome.
    assert wait_until(lambda: broker_copies(pipeline, request_id) == [], timeout_s=10), broker_copies(
        pipeline, request_id
    )
    assert finals_in_stream(pipeline, request_id) == [final]
    check = pipeline.redis()
    try:
        state = latest_state(check, pipeline.keys, "PS1", pkg["PackageID"])
    finally:
        check.close()
    assert state is not None and state.final and state.outcome == final
    # The same worker process did it: it survived the outage and reconnected by itself.
    assert pipeline.worker.alive() and pipeline.worker.pid == worker_pid


def test_idle_worker_keeps_consuming_after_redis_stops_and_restarts(pipeline_factory: PipelineFactory) -> None:
    """Redis stopped under an idle worker, then restarted: requests sent afterwards are consumed (celery #8030)."""
    pipeline = pipeline_factory(worker_extra_env=SHORT_VISIBILITY_ENV, concurrency=2)
    worker_pid = pipeline.worker.pid
    ps1 = pipeline.package("PS1", pkg_source_flag=2)
    bs1 = pipeline.package("BS1", pkg_source_flag=2)
    before = pipeline.refresh(site_code="BS1", package_id=bs1["PackageID"], package_class=bs1["class"])
    assert before.final is not None and before.final.status == "accepted"
    # Idle: the final outcome is published just before the message is acked; wait for the ack.
    assert wait_until(lambda: broker_copies(pipeline, before.request_id) == [], timeout_s=5)

    # Given Redis stopped under the idle worker, which notices and starts retrying its connection,
    pipeline.redis_server.stop()
    assert wait_until(lambda: RECONNECTING in pipeline.worker.output(), timeout_s=10), worker_tail(pipeline)
    # when Redis comes back (same port, same AOF),
    pipeline.redis_server.start()

    # then new requests over both transports are consumed and end normally, by the same process.
    runs = [
        pipeline.refresh(site_code="PS1", package_id=ps1["PackageID"], package_class=ps1["class"], timeout_s=20),
        pipeline.refresh(site_code="BS1", package_id=bs1["PackageID"], package_class=bs1["class"], timeout_s=20),
        pipeline.refresh(site_code="PS1", package_id="PS1FFFFF", package_class="SMS_Package", timeout_s=20),
    ]
    assert [run.final.status if run.final else None for run in runs] == ["accepted", "accepted", "failed"], worker_tail(
        pipeline
    )
    for run in runs:
        assert run.stream == run.live  # each event once, in order, live and durable alike
    assert pipeline.worker.alive() and pipeline.worker.pid == worker_pid


# -- helpers --------------------------------------------------------------------------------


def next_event(live: OutcomeSubscription, request_id: str, *, timeout_s: float) -> Outcome | None:
    """The next live outcome of `request_id` (others are skipped), or None at the timeout."""
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        outcome = live.get(timeout_s=remaining)
        if outcome is None:
            return None
        if outcome.request_id == request_id:
            return outcome
    return None


def await_final(pipeline: Pipeline, live: OutcomeSubscription, request_id: str, *, timeout_s: float) -> Outcome | None:
    """The request's final outcome: from the stream if already recorded, else as it arrives live."""
    caught_up = finals_in_stream(pipeline, request_id)
    if caught_up:
        return caught_up[0]
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        outcome = next_event(live, request_id, timeout_s=remaining)
        if outcome is None or outcome.final:
            return outcome
    return None


def finals_in_stream(pipeline: Pipeline, request_id: str) -> list[Outcome]:
    client = pipeline.redis()
    try:
        entries = read_stream(client, pipeline.keys, count=100_000)
    finally:
        client.close()
    return [e.outcome for e in entries if e.outcome.request_id == request_id and e.outcome.final]


def broker_copies(pipeline: Pipeline, request_id: str) -> list[dict[str, Any]]:
    """kwargs of every copy of the request's message in the queue or held unacked (read atomically)."""
    client = pipeline.redis()
    try:
        # One transaction: a message moving from the queue to 'unacked' is seen in exactly one.
        with client.pipeline(transaction=True) as tx:
            tx.lrange(pipeline.queue, 0, -1)
            tx.hvals(UNACKED_HASH)
            queued, held = tx.execute()
    finally:
        client.close()
    messages = [json.loads(raw) for raw in queued] + [json.loads(raw)[0] for raw in held]
    copies = [message_kwargs(message) for message in messages]
    return [kwargs for kwargs in copies if kwargs.get("request_id") == request_id]


def worker_tail(pipeline: Pipeline, lines: int = 40) -> str:
    return "\n".join(pipeline.worker.output().splitlines()[-lines:])


def test_final_outcome_waits_out_an_outcome_redis_outage(pipeline_factory: PipelineFactory) -> None:
    """The outcome Redis dies mid-refresh and stays down past the publisher's deadline: the request
    is re-queued, not acked away, and its one final outcome lands once that Redis is back."""
    env = {**SHORT_VISIBILITY_ENV, "SCCM_REFRESH_LIMITS__PUBLISH_DEADLINE_S": "0.5"}
    pipeline = pipeline_factory(worker_extra_env=env, concurrency=2, separate_outcome_redis=True)
    outcome_server = pipeline.outcome_server
    assert outcome_server is not None
    emulator = pipeline.emulators["BS1"]
    pkg = pipeline.package("BS1", pkg_source_flag=2)
    # Given a refresh in flight at the provider when the outcome Redis goes away,
    with emulator.hold_operations():
        request_id = pipeline.send({"site_code": "BS1", "package_id": pkg["PackageID"], "package_class": pkg["class"]})
        assert emulator.wait_in_flight(emulator.settings.username, 1, timeout_s=10)
        outcome_server.stop()
    # its final outcome cannot be published: the worker re-queues the request instead of acking it.
    assert wait_until(lambda: "final outcome not published" in pipeline.worker.output(), timeout_s=FINAL_TIMEOUT_S), (
        pipeline.worker.output()[-3000:]
    )
    outcome_server.start()
    client = pipeline.outcome_redis()
    try:

        def finals() -> list[Outcome]:
            entries = read_stream(client, pipeline.keys, count=1000)
            return [e.outcome for e in entries if e.outcome.request_id == request_id and e.outcome.final]

        assert wait_until(lambda: finals() != [], timeout_s=FINAL_TIMEOUT_S), pipeline.worker.output()[-3000:]
        recorded = finals()
    finally:
        client.close()
    assert len(recorded) == 1 and recorded[0].status == "accepted"
