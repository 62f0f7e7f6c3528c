"""The request watch's contract: RequestWatch on a real Redis and its stand-in answer alike.

Every scenario runs against both (worker/stores/request_watch.py, testing/standins/watch.py);
time is the `now_s` each call passes. On Redis, a final outcome's publication forgets a request
in the writer's own script: that path is checked here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import pytest
import redis

from testing.standins import MemoryWatch
from worker.domain.outcomes import AttemptInfo, Outcome, RequestInfo
from worker.stores.keys import RedisKeys
from worker.stores.outcome_writer import OutcomePublisher
from worker.stores.request_watch import Overdue, RequestWatch

pytestmark = pytest.mark.integration

T0 = 1_000_000.0
KWARGS = {"site_code": "PS1", "package_id": "PS100001", "request_id": "req-1"}


class WatchUnderTest(Protocol):
    def expect(
        self, request_id: str, task_id: str, kwargs: Mapping[str, Any], *, within_s: float, now_s: float | None = None
    ) -> None: ...

    def overdue(self, *, next_within_s: float, now_s: float | None = None) -> list[Overdue]: ...

    def forget(self, request_id: str) -> None: ...


@pytest.fixture(params=["redis", "memory"])
def watch(request: pytest.FixtureRequest) -> WatchUnderTest:
    if request.param == "memory":
        return MemoryWatch(lambda: T0)
    client: redis.Redis = request.getfixturevalue("redis_client")
    keys: RedisKeys = request.getfixturevalue("redis_keys")
    return RequestWatch(client, keys)


def test_a_request_is_overdue_once_its_deadline_has_come(watch: WatchUnderTest) -> None:
    """Nothing before the deadline; at it, the request with its task id and kwargs."""
    watch.expect("req-1", "task-1", KWARGS, within_s=100, now_s=T0)
    assert watch.overdue(next_within_s=60, now_s=T0 + 99) == []
    assert watch.overdue(next_within_s=60, now_s=T0 + 100) == [Overdue("req-1", "task-1", KWARGS)]


def test_an_overdue_request_gets_a_new_deadline_at_once(watch: WatchUnderTest) -> None:
    """A second sweep right after does not send it again; one past the new deadline does."""
    watch.expect("req-1", "task-1", KWARGS, within_s=0, now_s=T0)
    assert len(watch.overdue(next_within_s=60, now_s=T0)) == 1
    assert watch.overdue(next_within_s=60, now_s=T0 + 59) == []
    assert len(watch.overdue(next_within_s=60, now_s=T0 + 60)) == 1


def test_a_later_delivery_moves_the_deadline_and_the_message(watch: WatchUnderTest) -> None:
    """Expecting again replaces the deadline and the kwargs to send."""
    watch.expect("req-1", "task-1", KWARGS, within_s=10, now_s=T0)
    watch.expect("req-1", "task-1", {**KWARGS, "force": True}, within_s=10, now_s=T0 + 5)
    assert watch.overdue(next_within_s=60, now_s=T0 + 10) == []
    (lost,) = watch.overdue(next_within_s=60, now_s=T0 + 15)
    assert lost.kwargs == {**KWARGS, "force": True}


def test_overdue_requests_come_earliest_first(watch: WatchUnderTest) -> None:
    """The sweep lists requests by deadline, whatever order they were expected in."""
    watch.expect("req-b", "task-b", KWARGS, within_s=20, now_s=T0)
    watch.expect("req-a", "task-a", KWARGS, within_s=30, now_s=T0)
    watch.expect("req-c", "task-c", KWARGS, within_s=10, now_s=T0)
    found = watch.overdue(next_within_s=60, now_s=T0 + 30)
    assert [lost.request_id for lost in found] == ["req-c", "req-b", "req-a"]


def test_a_forgotten_request_is_never_overdue(watch: WatchUnderTest) -> None:
    """A request found ended is dropped from the watch; forgetting an unknown one is harmless."""
    watch.expect("req-1", "task-1", KWARGS, within_s=10, now_s=T0)
    watch.forget("req-1")
    watch.forget("req-never")
    assert watch.overdue(next_within_s=60, now_s=T0 + 1e6) == []


def test_publishing_a_final_outcome_forgets_the_request(redis_client: redis.Redis, redis_keys: RedisKeys) -> None:
    """On Redis the final's own script drops the request from the watch (what the stand-in's `forget` does)."""
    watch = RequestWatch(redis_client, redis_keys)
    watch.expect("req-1", "task-1", KWARGS, within_s=10, now_s=T0)
    at = datetime.fromtimestamp(T0, UTC)
    request = RequestInfo("req-1", "PS1", "SMS_Package", "PS100001", requested_at=at)
    OutcomePublisher(redis_client, redis_keys).publish(Outcome.cancelled(request, AttemptInfo(1, 1, at, at, "w:1")))
    assert watch.overdue(next_within_s=60, now_s=T0 + 1e6) == []
