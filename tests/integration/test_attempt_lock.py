"""The attempt lock on a real redis-server: one holder, a waiter told its time left, the fence read with it."""

from __future__ import annotations

import pytest
import redis

from worker.stores.fence import RedisInvokeFences
from worker.stores.keys import RedisKeys
from worker.usecase.values import FenceSnapshot

pytestmark = pytest.mark.integration


@pytest.fixture
def fences(redis_client: redis.Redis, redis_keys: RedisKeys) -> RedisInvokeFences:
    return RedisInvokeFences(redis_client, redis_keys, ttl_s=3600)


def test_a_held_lock_refuses_a_second_delivery_and_says_how_long_it_has_left(fences: RedisInvokeFences) -> None:
    """The waiter's re-look is timed by the lock's remaining life, never longer than its lifetime."""
    token = fences.try_lock("req-1", ttl_s=20)
    assert token is not None
    try:
        assert fences.try_lock("req-1", ttl_s=20) is None
        assert 15.0 < fences.lock_left_s("req-1") <= 20.0
    finally:
        fences.unlock("req-1", token)
    assert fences.lock_left_s("req-1") == 0.0
    again = fences.try_lock("req-1", ttl_s=20)
    assert again is not None
    fences.unlock("req-1", again)


def test_a_lapsed_lock_has_nothing_left(
    redis_client: redis.Redis, redis_keys: RedisKeys, fences: RedisInvokeFences
) -> None:
    """A holder frozen past its lock's life: nothing left, and the next delivery takes it."""
    redis_client.set(redis_keys.attempt_lock("req-2"), "someone-elses-token", px=50)
    assert fences.try_lock("req-2", ttl_s=20) is None
    assert 0.0 <= fences.lock_left_s("req-2") <= 0.05
    redis_client.delete(redis_keys.attempt_lock("req-2"))
    assert fences.lock_left_s("req-2") == 0.0


def test_the_lock_brings_the_fence_with_it_once_and_later_reads_go_to_redis(
    redis_client: redis.Redis, redis_keys: RedisKeys, fences: RedisInvokeFences
) -> None:
    """Taking the lock reads the fence in the same round trip; the attempt's first read is that one,
    the next read asks Redis again; a refused lock keeps nothing."""
    fences.write("req-3", FenceSnapshot(5, None, 0, 1.0))
    token = fences.try_lock("req-3", ttl_s=20)
    assert token is not None
    try:
        redis_client.set(redis_keys.invoke_fence("req-3"), FenceSnapshot(6, None, 0, 2.0).to_json())
        first = fences.read("req-3")
        assert first is not None and first.source_version == 5  # as read with the lock
        second = fences.read("req-3")
        assert second is not None and second.source_version == 6
        assert fences.try_lock("req-3", ttl_s=20) is None
    finally:
        fences.unlock("req-3", token)
    absent = fences.try_lock("req-4", ttl_s=20)
    assert absent is not None
    try:
        assert fences.read("req-4") is None
    finally:
        fences.unlock("req-4", absent)
