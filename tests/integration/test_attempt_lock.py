"""The attempt lock against a real redis-server: one holder, and a waiter told how long it has left."""

from __future__ import annotations

import pytest
import redis

from worker.stores.fence import RedisInvokeFences
from worker.stores.keys import RedisKeys

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
