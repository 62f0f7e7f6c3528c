"""The coalescing contract: Coalescer on a real Redis and its stand-in answer alike.

Every scenario runs against both (worker/stores/coalesce.py, testing/standins/coalescer.py).
The Redis store's expiries are Redis TTLs, with no clock to pass: the scenarios here need no
time to pass; the stand-in's expiries are covered in tests/unit/test_standins.py.
"""

from __future__ import annotations

import pytest
import redis

from testing.standins import MemoryCoalescer
from worker.stores.coalesce import Coalescer
from worker.stores.keys import RedisKeys
from worker.usecase.ports import Coalescing
from worker.usecase.values import Closed, Follower, Joined, Leader

pytestmark = pytest.mark.integration

SITE, PACKAGE = "PS1", "PS100001"
TTL_S = 600.0


@pytest.fixture(params=["redis", "memory"])
def coalescer(request: pytest.FixtureRequest) -> Coalescing:
    if request.param == "memory":
        return MemoryCoalescer(lambda: 1_000_000.0)
    client: redis.Redis = request.getfixturevalue("redis_client")
    keys: RedisKeys = request.getfixturevalue("redis_keys")
    return Coalescer(client, keys)


def claim(coalescer: Coalescing, request_id: str, **info: object) -> Leader | Joined:
    return coalescer.claim(SITE, PACKAGE, request_id, {"task_id": request_id, **info}, ttl_s=TTL_S)


def test_the_first_claim_leads_and_later_ones_join_it(coalescer: Coalescing) -> None:
    """The first request leads (again when it claims again); another joins, naming the leader."""
    assert claim(coalescer, "req-1") == Leader("req-1")
    assert claim(coalescer, "req-2") == Joined("req-1")
    assert claim(coalescer, "req-1") == Leader("req-1")
    assert coalescer.current_leader(SITE, PACKAGE) == "req-1"


def test_a_package_is_known_by_its_site_and_id_in_any_case(coalescer: Coalescing) -> None:
    """ps1/ps100001 is the same package as PS1/PS100001; another package has its own leader."""
    assert claim(coalescer, "req-1") == Leader("req-1")
    assert coalescer.claim("ps1", "ps100001", "req-2", {}, ttl_s=TTL_S) == Joined("req-1")
    assert coalescer.claim(SITE, "PS100002", "req-3", {}, ttl_s=TTL_S) == Leader("req-3")


def test_closing_hands_over_each_follower_once_with_its_latest_info(coalescer: Coalescing) -> None:
    """Followers come back sorted by id, listed once however often they claimed; the group is gone."""
    claim(coalescer, "req-1")
    claim(coalescer, "req-3", correlation_id="first")
    claim(coalescer, "req-2")
    claim(coalescer, "req-3", correlation_id="second")
    closed = coalescer.close(SITE, PACKAGE, "req-1")
    assert closed == Closed(
        True,
        (
            Follower("req-2", {"task_id": "req-2"}),
            Follower("req-3", {"task_id": "req-3", "correlation_id": "second"}),
        ),
    )
    assert coalescer.current_leader(SITE, PACKAGE) is None


def test_only_the_current_leader_closes_the_group(coalescer: Coalescing) -> None:
    """A follower's close changes nothing and hands over nothing."""
    claim(coalescer, "req-1")
    claim(coalescer, "req-2")
    assert coalescer.close(SITE, PACKAGE, "req-2") == Closed(False, ())
    assert coalescer.current_leader(SITE, PACKAGE) == "req-1"
    assert [f.request_id for f in coalescer.close(SITE, PACKAGE, "req-1").followers] == ["req-2"]


def test_a_repeated_close_finds_the_followers_still_to_publish(coalescer: Coalescing) -> None:
    """After a crash between close and publication, closing again lists what is not yet acknowledged."""
    claim(coalescer, "req-1")
    claim(coalescer, "req-2")
    claim(coalescer, "req-3")
    coalescer.close(SITE, PACKAGE, "req-1")
    assert coalescer.ack_follower("req-1", "req-2") and not coalescer.ack_follower("req-1", "req-2")
    again = coalescer.close(SITE, PACKAGE, "req-1")
    assert not again.closed and [f.request_id for f in again.followers] == ["req-3"]
    assert [f.request_id for f in coalescer.pending_followers("req-1")] == ["req-3"]
    assert coalescer.ack_follower("req-1", "req-3")
    assert coalescer.pending_followers("req-1") == ()


def test_after_a_close_the_next_request_leads_anew(coalescer: Coalescing) -> None:
    """A closed group is over: the next claim leads, with no followers of its own yet."""
    claim(coalescer, "req-1")
    claim(coalescer, "req-2")
    coalescer.close(SITE, PACKAGE, "req-1")
    assert claim(coalescer, "req-4") == Leader("req-4")
    assert coalescer.close(SITE, PACKAGE, "req-4") == Closed(True, ())
