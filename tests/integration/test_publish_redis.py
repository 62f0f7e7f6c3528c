"""OutcomePublisher against a real redis-server: stream, latest-state hash, channel, idempotent finals."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from redis import exceptions as redis_errors

from embedded.redis_server import RedisServer
from errors import ConnectError, InvalidRequestError, MediumNotReadyError
from testing.fixtures_redis import RedisServerFactory
from worker.domain.outcomes import AttemptInfo, InvalidOutcomeError, Outcome, RequestInfo
from worker.stores.keys import RedisKeys
from worker.stores.outcome_reader import final_stream_id, latest_state, read_stream, request_state, subscribe
from worker.stores.outcome_writer import OutcomePublisher, latency_bucket
from worker.stores.redis_client import redis_from_url

pytestmark = pytest.mark.integration

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
SITE = "PS1"
PACKAGE = "PS100012"


def request(request_id: str = "req-1", *, requested_at: datetime = T0, package_id: str = PACKAGE) -> RequestInfo:
    return RequestInfo(request_id, SITE, "SMS_DriverPackage", package_id, requested_at)


def attempt(number: int = 1) -> AttemptInfo:
    started = T0 + timedelta(minutes=number)
    return AttemptInfo(number, number, started, started + timedelta(seconds=1), "worker-1:4242")


def final(request_id: str = "req-1", *, number: int = 1, requested_at: datetime = T0) -> Outcome:
    return Outcome.succeeded(
        request(request_id, requested_at=requested_at),
        attempt(number),
        source_version_before=3,
        source_version_after=4,
    )


def retrying(request_id: str = "req-1", *, number: int = 1, requested_at: datetime = T0) -> Outcome:
    run = attempt(number)
    return Outcome.retrying(
        request(request_id, requested_at=requested_at),
        run,
        MediumNotReadyError("source medium not ready"),
        next_retry_at=run.finished_at + timedelta(minutes=5),
    )


def test_final_outcome_lands_in_stream_hash_and_channel(redis_client: redis.Redis, redis_keys: RedisKeys) -> None:
    """One publish writes the stream entry, the package hash and the live message, and sets the marker."""
    publisher = OutcomePublisher(redis_client, redis_keys)
    outcome = final()
    with subscribe(redis_client, redis_keys) as subscription:
        result = publisher.publish_detailed(outcome)
        received = subscription.get(timeout_s=5.0)

    assert result.published and result.state_updated
    assert received == outcome
    [entry] = read_stream(redis_client, redis_keys)
    assert (entry.stream_id, entry.outcome) == (result.stream_id, outcome)
    entries = redis_client.xrange(redis_keys.outcome_stream)
    assert entries is not None
    raw = entries[0][1]
    assert raw is not None
    assert {name: raw[name] for name in ("request_id", "package_id", "site_code", "status", "final")} == {
        "request_id": "req-1",
        "package_id": PACKAGE,
        "site_code": SITE,
        "status": "source_updated",
        "final": "1",
    }
    state = latest_state(redis_client, redis_keys, SITE, PACKAGE)
    assert state is not None
    assert (state.status, state.request_id, state.final, state.source_version) == ("source_updated", "req-1", True, 4)
    assert (state.updated_at, state.outcome) == (outcome.finished_at, outcome)
    assert final_stream_id(redis_client, redis_keys, "req-1") == result.stream_id


def test_final_marker_expires_after_the_configured_ttl(redis_client: redis.Redis, redis_keys: RedisKeys) -> None:
    """The idempotency marker carries the configured TTL, so markers do not pile up forever."""
    OutcomePublisher(redis_client, redis_keys, final_marker_ttl_s=3600).publish(final())
    assert 3500 < redis_client.ttl(redis_keys.final_marker("req-1")) <= 3600


def test_publishing_the_same_final_twice_records_it_once(redis_client: redis.Redis, redis_keys: RedisKeys) -> None:
    """A second final for the same request returns False and writes nothing, even a different final."""
    publisher = OutcomePublisher(redis_client, redis_keys)
    assert publisher.publish(final()) is True
    assert publisher.publish(final()) is False
    assert publisher.publish(final(number=2)) is False
    assert redis_client.xlen(redis_keys.outcome_stream) == 1


def test_retrying_events_then_final_are_all_streamed_and_final_wins(
    redis_client: redis.Redis, redis_keys: RedisKeys
) -> None:
    """Non-final events are published without a marker; the final one then sets the state."""
    publisher = OutcomePublisher(redis_client, redis_keys)
    events = [retrying(number=1), retrying(number=2), final(number=3)]
    assert [publisher.publish(event) for event in events] == [True, True, True]

    assert [entry.outcome for entry in read_stream(redis_client, redis_keys)] == events
    state = latest_state(redis_client, redis_keys, SITE, PACKAGE)
    assert state is not None
    assert (state.status, state.final, state.outcome.attempt) == ("source_updated", True, 3)


def test_nothing_is_recorded_for_a_request_after_its_final(redis_client: redis.Redis, redis_keys: RedisKeys) -> None:
    """A retrying event arriving after its request's final (a duplicate lineage) is dropped entirely."""
    publisher = OutcomePublisher(redis_client, redis_keys)
    publisher.publish(final(number=2))
    late = publisher.publish_detailed(retrying(number=1))

    assert not late.published and not late.state_updated
    assert publisher.final_recorded("req-1")
    state = latest_state(redis_client, redis_keys, SITE, PACKAGE)
    assert state is not None and state.status == "source_updated"
    assert redis_client.xlen(redis_keys.outcome_stream) == 1


def test_earlier_attempt_does_not_overwrite_a_later_retrying_state(
    redis_client: redis.Redis, redis_keys: RedisKeys
) -> None:
    """Out-of-order non-final events of one request keep the highest attempt in the hash."""
    publisher = OutcomePublisher(redis_client, redis_keys)
    publisher.publish(retrying(number=3))
    assert publisher.publish_detailed(retrying(number=2)).state_updated is False
    state = latest_state(redis_client, redis_keys, SITE, PACKAGE)
    assert state is not None and state.outcome.attempt == 3


def test_older_request_does_not_overwrite_a_newer_requests_state(
    redis_client: redis.Redis, redis_keys: RedisKeys
) -> None:
    """The hash keeps the outcome of the most recently requested refresh, whatever the finishing order."""
    publisher = OutcomePublisher(redis_client, redis_keys)
    newer = final("req-new", requested_at=T0 + timedelta(seconds=1))
    older = retrying("req-old", requested_at=T0)
    publisher.publish(newer)
    older_result = publisher.publish_detailed(older)

    assert older_result.published and not older_result.state_updated
    state = latest_state(redis_client, redis_keys, SITE, PACKAGE)
    assert state is not None and state.request_id == "req-new"
    assert publisher.publish_detailed(retrying("req-newest", requested_at=T0 + timedelta(seconds=2))).state_updated


def test_rejected_outcome_with_unkeyable_package_id_skips_the_hash(
    redis_client: redis.Redis, redis_keys: RedisKeys
) -> None:
    """A request rejected for a malformed package id is still streamed, with no package hash."""
    rejected = Outcome.rejected(request(package_id="PS1:bad id"), attempt(), InvalidRequestError("bad package id"))
    result = OutcomePublisher(redis_client, redis_keys).publish_detailed(rejected)

    assert result.published and not result.state_updated
    assert [entry.outcome for entry in read_stream(redis_client, redis_keys)] == [rejected]
    assert redis_client.keys(f"{redis_keys.prefix}:package:*") == []


def test_stream_is_trimmed_to_about_maxlen(redis_client: redis.Redis, redis_keys: RedisKeys) -> None:
    """MAXLEN ~ keeps the stream near its cap (whole radix-tree nodes of 100 entries are dropped)."""
    publisher = OutcomePublisher(redis_client, redis_keys, stream_maxlen=10)
    for number in range(1, 301):
        publisher.publish(retrying(number=number))
    length = redis_client.xlen(redis_keys.outcome_stream)
    assert 10 <= length <= 10 + 100


def test_read_stream_pages_after_an_id(redis_client: redis.Redis, redis_keys: RedisKeys) -> None:
    """read_stream returns entries strictly after after_id, at most count of them."""
    publisher = OutcomePublisher(redis_client, redis_keys)
    for number in range(1, 6):
        publisher.publish(retrying(number=number))
    first = read_stream(redis_client, redis_keys, count=2)
    rest = read_stream(redis_client, redis_keys, after_id=first[-1].stream_id, count=10)
    assert [e.outcome.attempt for e in first] == [1, 2]
    assert [e.outcome.attempt for e in rest] == [3, 4, 5]
    assert read_stream(redis_client, redis_keys, after_id=rest[-1].stream_id) == []


def test_subscription_returns_none_when_nothing_arrives(redis_client: redis.Redis, redis_keys: RedisKeys) -> None:
    """get() gives up after its timeout and iter() ends when the channel stays idle."""
    with subscribe(redis_client, redis_keys) as subscription:
        assert subscription.get(timeout_s=0.05) is None
        assert list(subscription.iter(idle_timeout_s=0.05)) == []


class _RetryLogged(logging.Handler):
    """Sets an event when the publisher logs that it is retrying."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.event.set()


def test_publish_during_a_redis_crash_lands_exactly_once_after_restart(
    redis_server_factory: RedisServerFactory, redis_keys: RedisKeys
) -> None:
    """A publish started while Redis is down waits it out; the AOF keeps the earlier final's marker."""
    server = redis_server_factory(appendfsync="always")  # a crash must not lose the acknowledged final
    client = redis_from_url(server.url)
    publisher = OutcomePublisher(client, redis_keys, retry_deadline_s=20.0, retry_max_backoff_s=0.2)
    assert publisher.publish(final("req-before"))
    server.kill()

    handler = _RetryLogged()
    logging.getLogger("worker.stores.outcome_writer").addHandler(handler)
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(publisher.publish(final("req-during"))))
    try:
        thread.start()
        assert handler.event.wait(timeout=10.0), "the publisher never hit the outage"
        server.restart()
        thread.join(timeout=20.0)
    finally:
        logging.getLogger("worker.stores.outcome_writer").removeHandler(handler)

    assert results == [True]
    assert [e.outcome.request_id for e in read_stream(client, redis_keys)] == ["req-before", "req-during"]
    assert publisher.publish(final("req-before")) is False  # its marker survived the crash
    client.close()


def test_publish_gives_up_after_its_deadline(redis_server_factory: RedisServerFactory, redis_keys: RedisKeys) -> None:
    """With Redis gone for good, publish raises the connection error once the retry deadline passes."""
    server = redis_server_factory()
    client = redis_from_url(server.url, retries=0, connect_timeout_s=0.2)
    publisher = OutcomePublisher(client, redis_keys, retry_deadline_s=0.3, retry_max_backoff_s=0.05)
    server.stop()
    with pytest.raises(redis_errors.ConnectionError):
        publisher.publish(retrying(number=1, requested_at=T0))
    client.close()


def test_publish_does_not_retry_a_wrong_password(tmp_path: Path, redis_keys: RedisKeys) -> None:
    """An authentication failure is not a blip: it surfaces at once instead of after the deadline."""
    with RedisServer(data_dir=tmp_path, password="right") as server:
        client = redis_from_url(f"redis://:wrong@127.0.0.1:{server.port}/0", retries=0)
        publisher = OutcomePublisher(client, redis_keys, retry_deadline_s=30.0)
        started = time.monotonic()
        with pytest.raises(redis_errors.AuthenticationError):
            publisher.publish(final())
        client.close()
    assert time.monotonic() - started < 5.0


def test_transient_error_event_carries_its_structured_error(redis_client: redis.Redis, redis_keys: RedisKeys) -> None:
    """The stored retrying event keeps the error's kind and codes for consumers."""
    run = attempt()
    event = Outcome.retrying(
        request(),
        run,
        ConnectError("connection reset", code=104),
        next_retry_at=run.finished_at + timedelta(seconds=30),
    )
    OutcomePublisher(redis_client, redis_keys).publish(event)
    [entry] = read_stream(redis_client, redis_keys)
    assert entry.outcome.error is not None
    assert (entry.outcome.error["kind"], entry.outcome.error["code"]) == ("connect", 104)


def rejected(request_id: str = "req-1", *, task_id: str = "task-1") -> Outcome:
    info = RequestInfo(request_id, SITE, "SMS_DriverPackage", PACKAGE, T0, task_id=task_id)
    return Outcome.rejected(info, attempt(1), InvalidRequestError("force: Input should be a valid boolean"))


def test_request_state_follows_the_latest_event_and_keeps_the_final(
    redis_client: redis.Redis, redis_keys: RedisKeys
) -> None:
    """retrying then final: the request's state is the final; a late retrying event changes nothing."""
    publisher = OutcomePublisher(redis_client, redis_keys)
    publisher.publish(retrying(number=1))
    state = request_state(redis_client, redis_keys, "req-1")
    assert state is not None and state.status == "retrying" and not state.final and state.attempt == 1
    result = publisher.publish_detailed(final(number=2))
    publisher.publish(retrying(number=1))
    state = request_state(redis_client, redis_keys, "req-1")
    assert (
        state is not None and state.final and state.status == "source_updated" and state.stream_id == result.stream_id
    )
    assert request_state(redis_client, redis_keys, "req-unknown") is None


def test_a_rejection_answers_its_message_and_a_fixed_request_under_the_same_id_still_runs(
    redis_client: redis.Redis, redis_keys: RedisKeys
) -> None:
    """The rejection is recorded once per message and does not mark the request id final."""
    publisher = OutcomePublisher(redis_client, redis_keys)
    assert publisher.publish(rejected(), message_key="msg-a") is True
    assert publisher.publish(rejected(), message_key="msg-a") is False  # the same message again
    assert publisher.final_recorded("req-1") is False
    assert final_stream_id(redis_client, redis_keys, "req-1") is not None  # findable under its id
    assert publisher.publish(final()) is True
    assert publisher.final_recorded("req-1") is True
    assert publisher.publish(rejected(task_id="task-2"), message_key="msg-b") is True  # a new bad message
    state = request_state(redis_client, redis_keys, "req-1")
    assert state is not None and state.status == "source_updated"  # the rejection does not hide the final
    marker = redis_client.get(redis_keys.final_marker("req-1"))
    assert marker == final_stream_id(redis_client, redis_keys, "req-1") == state.stream_id


def test_the_writer_keeps_metrics_counters_without_scanning_anything(
    redis_client: redis.Redis, redis_keys: RedisKeys
) -> None:
    """Outcomes by status and site, errors by kind, and a request-to-final latency histogram."""
    publisher = OutcomePublisher(redis_client, redis_keys)
    publisher.publish(retrying(number=1))
    publisher.publish(final(number=2))
    outcomes_key, errors_key, latency_key = redis_keys.metrics
    assert redis_client.hgetall(outcomes_key) == {f"retrying|{SITE}": "1", f"source_updated|{SITE}": "1"}
    assert redis_client.hgetall(errors_key) == {"medium_not_ready|retrying": "1"}
    latency = redis_client.hgetall(latency_key)
    expected_s = (final(number=2).finished_at - T0).total_seconds()
    assert latency["count"] == "1" and float(latency["sum"]) == pytest.approx(expected_s)
    assert latency[latency_bucket(expected_s)] == "1"


def test_a_subscription_made_from_a_client_nobody_else_holds_misses_nothing(
    redis_url: str, redis_client: redis.Redis, redis_keys: RedisKeys
) -> None:
    """`subscribe(redis_from_url(...))`, as `sccm-refresh watch` does: the subscription keeps its
    client alive. Before, the client was collected at once and its pool disconnected, the
    subscribed connection with it: of 200 messages published right after subscribing, 198 went
    to no subscriber."""
    for _ in range(50):
        with subscribe(redis_from_url(redis_url), redis_keys) as live:
            assert redis_client.publish(redis_keys.outcome_channel, "not an outcome") == 1
            with pytest.raises(InvalidOutcomeError):
                live.get(timeout_s=2.0)
