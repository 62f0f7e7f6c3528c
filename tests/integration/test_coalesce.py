"""Coalescer against a real redis-server: one leader per package, followers handed over on close."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import redis

from errors import InvalidRequestError
from testing.threads import run_in_threads
from testing.waiting import wait_until
from worker.stores.coalesce import Closed, Coalescer, Follower, Joined, Leader
from worker.stores.keys import RedisKeys

pytestmark = pytest.mark.integration

SITE = "PS1"
PACKAGE = "PS100012"
TTL_S = 3600.0


@pytest.fixture
def coalescer(redis_client: redis.Redis, redis_keys: RedisKeys) -> Coalescer:
    return Coalescer(redis_client, redis_keys)


def info(request_id: str) -> dict[str, str]:
    return {"request_id": request_id, "task_id": f"task-{request_id}", "requested_at": "2024-05-01T12:00:00.000Z"}


def test_concurrent_claims_elect_exactly_one_leader(coalescer: Coalescer) -> None:
    """Twenty requests claiming one package at the same moment: one leads, nineteen join it."""
    barrier = threading.Barrier(20)
    results: dict[str, Leader | Joined] = {}
    lock = threading.Lock()

    def claim(request_id: str) -> None:
        barrier.wait(timeout=10)
        result = coalescer.claim(SITE, PACKAGE, request_id, info(request_id), ttl_s=TTL_S)
        with lock:
            results[request_id] = result

    assert run_in_threads(20, lambda i: claim(f"req-{i}"), timeout_s=30) == []
    leaders = [rid for rid, result in results.items() if isinstance(result, Leader)]
    assert len(results) == 20
    assert len(leaders) == 1
    assert all(result == Joined(leaders[0]) for rid, result in results.items() if rid != leaders[0])
    closed = coalescer.close(SITE, PACKAGE, leaders[0])
    assert sorted(f.request_id for f in closed.followers) == sorted(rid for rid in results if rid != leaders[0])


def test_followers_are_handed_over_on_close_with_their_info(coalescer: Coalescer) -> None:
    """close() returns each follower once, with the info it gave, and later requests lead anew."""
    assert coalescer.claim(SITE, PACKAGE, "leader", info("leader"), ttl_s=TTL_S) == Leader("leader")
    assert coalescer.claim(SITE, PACKAGE, "f1", info("f1"), ttl_s=TTL_S) == Joined("leader")
    assert coalescer.claim(SITE, PACKAGE, "f2", info("f2"), ttl_s=TTL_S) == Joined("leader")
    assert coalescer.claim(SITE, PACKAGE, "f1", info("f1"), ttl_s=TTL_S) == Joined("leader")  # joined twice
    closed = coalescer.close(SITE, PACKAGE, "leader")
    assert closed == Closed(True, (Follower("f1", info("f1")), Follower("f2", info("f2"))))
    assert coalescer.current_leader(SITE, PACKAGE) is None
    assert coalescer.claim(SITE, PACKAGE, "after", info("after"), ttl_s=TTL_S) == Leader("after")
    assert coalescer.close(SITE, PACKAGE, "after") == Closed(True, ())


def test_claiming_again_as_the_leader_stays_leader(coalescer: Coalescer) -> None:
    """A redelivered leader message claims again and is still the leader, with no follower added."""
    assert coalescer.claim(SITE, PACKAGE, "leader", info("leader"), ttl_s=TTL_S) == Leader("leader")
    assert coalescer.claim(SITE, PACKAGE, "leader", info("leader"), ttl_s=TTL_S) == Leader("leader")
    assert coalescer.close(SITE, PACKAGE, "leader").followers == ()


def test_only_the_current_leader_can_close(coalescer: Coalescer) -> None:
    """A follower (or a stale leader) calling close changes nothing; the group stays open."""
    coalescer.claim(SITE, PACKAGE, "leader", info("leader"), ttl_s=TTL_S)
    coalescer.claim(SITE, PACKAGE, "f1", info("f1"), ttl_s=TTL_S)
    assert coalescer.close(SITE, PACKAGE, "f1") == Closed(False, ())
    assert coalescer.current_leader(SITE, PACKAGE) == "leader"
    assert coalescer.close(SITE, PACKAGE, "leader").followers == (Follower("f1", info("f1")),)


def test_a_crash_between_close_and_publishing_keeps_followers_retrievable(coalescer: Coalescer) -> None:
    """After close, followers stay in the to-publish hash until acknowledged; a redelivered close lists them again."""
    coalescer.claim(SITE, PACKAGE, "leader", info("leader"), ttl_s=TTL_S)
    for rid in ("f1", "f2", "f3"):
        coalescer.claim(SITE, PACKAGE, rid, info(rid), ttl_s=TTL_S)
    coalescer.close(SITE, PACKAGE, "leader")  # ...and the worker dies before publishing anything
    assert [f.request_id for f in coalescer.pending_followers("leader")] == ["f1", "f2", "f3"]
    assert coalescer.ack_follower("leader", "f1") is True
    assert coalescer.ack_follower("leader", "f1") is False
    redelivered = coalescer.close(SITE, PACKAGE, "leader")
    assert redelivered.closed is False
    assert [f.request_id for f in redelivered.followers] == ["f2", "f3"]
    coalescer.ack_follower("leader", "f2")
    coalescer.ack_follower("leader", "f3")
    assert coalescer.pending_followers("leader") == ()


def test_an_expired_marker_lets_a_new_leader_in(coalescer: Coalescer) -> None:
    """A leader that dies without closing stops blocking the package once its marker's TTL passes."""
    assert coalescer.claim(SITE, PACKAGE, "dying", info("dying"), ttl_s=0.05) == Leader("dying")
    assert wait_until(lambda: coalescer.current_leader(SITE, PACKAGE) is None, timeout_s=5)
    assert coalescer.claim(SITE, PACKAGE, "next", info("next"), ttl_s=TTL_S) == Leader("next")
    assert coalescer.close(SITE, PACKAGE, "dying") == Closed(False, ())


def test_a_follower_of_a_dead_leader_takes_over_by_claiming_again(
    coalescer: Coalescer, redis_client: redis.Redis, redis_keys: RedisKeys
) -> None:
    """The watcher finds its leader gone, claims again, leads, and is not listed as its own follower."""
    coalescer.claim(SITE, PACKAGE, "dead", info("dead"), ttl_s=TTL_S)
    assert coalescer.claim(SITE, PACKAGE, "watcher", info("watcher"), ttl_s=TTL_S) == Joined("dead")
    coalescer.claim(SITE, PACKAGE, "other", info("other"), ttl_s=TTL_S)
    redis_client.delete(redis_keys.coalesce_leader(SITE, PACKAGE))  # the dead leader's marker expires
    assert coalescer.current_leader(SITE, PACKAGE) is None
    assert coalescer.claim(SITE, PACKAGE, "watcher", info("watcher"), ttl_s=TTL_S) == Leader("watcher")
    # The other follower of the dead leader is published by whoever closes next.
    assert coalescer.close(SITE, PACKAGE, "watcher").followers == (Follower("other", info("other")),)


def test_packages_and_sites_coalesce_separately(coalescer: Coalescer) -> None:
    """Each (site, package) has its own leader; package ids are case-insensitive."""
    assert coalescer.claim("PS1", "PS100012", "a", info("a"), ttl_s=TTL_S) == Leader("a")
    assert coalescer.claim("PS1", "PS100013", "b", info("b"), ttl_s=TTL_S) == Leader("b")
    assert coalescer.claim("PS2", "PS100012", "c", info("c"), ttl_s=TTL_S) == Leader("c")
    assert coalescer.claim("ps1", "ps100012", "d", info("d"), ttl_s=TTL_S) == Joined("a")


def test_every_coalescing_key_expires(coalescer: Coalescer, redis_client: redis.Redis, redis_keys: RedisKeys) -> None:
    """Marker, followers and the to-publish hash all carry a TTL."""
    coalescer.claim(SITE, PACKAGE, "leader", info("leader"), ttl_s=TTL_S)
    coalescer.claim(SITE, PACKAGE, "f1", info("f1"), ttl_s=TTL_S)
    for key in (redis_keys.coalesce_leader(SITE, PACKAGE), redis_keys.coalesce_followers(SITE, PACKAGE)):
        assert 0 < redis_client.ttl(key) <= TTL_S
    coalescer.close(SITE, PACKAGE, "leader")
    assert redis_client.ttl(redis_keys.coalesce_to_publish("leader")) > 0
    assert sorted(redis_client.keys(f"{redis_keys.prefix}:*")) == [redis_keys.coalesce_to_publish("leader")]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda c: c.claim("PS1", "PS1'0001", "r", {}, ttl_s=60), InvalidRequestError, "PackageID"),
        (lambda c: c.claim("P S", "PS100012", "r", {}, ttl_s=60), InvalidRequestError, "site code"),
        (lambda c: c.claim(SITE, PACKAGE, "has space", {}, ttl_s=60), ValueError, "request id"),
        (lambda c: c.claim(SITE, PACKAGE, "r", {"x": object()}, ttl_s=60), ValueError, "JSON"),
        (lambda c: c.claim(SITE, PACKAGE, "r", {"x": "y" * 20_000}, ttl_s=60), ValueError, "bytes"),
        (lambda c: c.claim(SITE, PACKAGE, "r", {}, ttl_s=0), ValueError, "ttl_s"),
        (lambda c: c.claim(SITE, PACKAGE, "r", {}, ttl_s=float("inf")), ValueError, "ttl_s"),
        (lambda c: c.ack_follower("leader", ""), ValueError, "request id"),
    ],
)
def test_bad_arguments_get_a_clear_error(
    coalescer: Coalescer, call: Callable[[Coalescer], object], error: type[Exception], message: str
) -> None:
    """Malformed ids, oversized or unserialisable info and silly TTLs are refused before Redis is touched."""
    with pytest.raises(error, match=message):
        call(coalescer)
