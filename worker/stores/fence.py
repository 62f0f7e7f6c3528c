"""The invoke fence: never call RefreshPkgSource twice for one request.

Every extra refresh re-copies the package to every distribution point, so a request whose
worker died after RefreshPkgSource was accepted (but before the final outcome was written)
must not refresh again when its message is redelivered, and neither must an in-call retry
after a reply was lost on the way back.

Before invoking, the worker records a snapshot of the package (SourceVersion, LastRefreshTime,
ActionInProgress) under the request id. The next try of the same request (a redelivery, a
re-queue, an in-call retry) reads the package again first; if it moved since the snapshot, the
earlier invoke landed and the request is reported accepted without invoking again. The final
outcome's publication deletes the fence (worker/stores/outcome_writer.lua).

The fence works between deliveries that follow one another. Two copies of one message can also
run at the same time (a dead consumer's holdings restored while a frozen one still has them):
`try_lock` lets only one of them attempt; the other waits. The lock is a short lease that the
process renews while it attempts (worker/stores/lease_keeper.py): a killed worker's request is free
again within `limits.attempt_lock_s`. The fence is written only while the lock is still this
attempt's, so an attempt that was frozen past its lease and superseded stops before it could Invoke.

The snapshot and what "moved" means (`landed`) are the use case's (worker/usecase/values.py);
the fences and the attempt lock are kept here, in Redis.
"""

from __future__ import annotations

import secrets
import threading
from typing import Any, Final

from redis import Redis

from errors import AttemptSupersededError
from worker.stores.keys import RedisKeys
from worker.stores.lease_keeper import Held, LeaseKeeper, lease_keeper
from worker.usecase.values import FenceSnapshot

__all__ = ["FenceSnapshot", "RedisInvokeFences"]

_NOT_READ: Final = object()

_UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# Extends the lock by ARGV[2] ms if ARGV[1] still holds it.
_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# Writes the fence (KEYS[2] = ARGV[2], ttl ARGV[3] s) only while ARGV[1] holds the lock KEYS[1].
_WRITE_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
return 1
"""


class RedisInvokeFences:
    """Fences kept in Redis, one per request id, expiring after `ttl_s` (deleted with the final)."""

    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        *,
        ttl_s: int,
        keeper: LeaseKeeper = lease_keeper,
        max_hold_s: float | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s
        self._max_hold_s = max_hold_s  # an attempt lock is never renewed past the task time limit
        self._keeper = keeper
        self._unlock = redis.register_script(_UNLOCK_LUA)
        self._renew = redis.register_script(_RENEW_LUA)
        self._write = redis.register_script(_WRITE_LUA)
        self._held: dict[str, tuple[str, Held]] = {}  # request id -> (token, its kept lease)
        self._prefetched: dict[str, Any] = {}  # request id -> its fence as read with the lock (once)
        self._held_lock = threading.Lock()

    def read(self, request_id: str) -> FenceSnapshot | None:
        with self._held_lock:
            prefetched = self._prefetched.pop(request_id, _NOT_READ)
        # Read with the lock it holds (`try_lock`): only the lock's holder writes the fence.
        raw = self._redis.get(self._keys.invoke_fence(request_id)) if prefetched is _NOT_READ else prefetched
        if raw is None:
            return None
        return FenceSnapshot.from_json(raw.decode() if isinstance(raw, bytes) else str(raw))

    def write(self, request_id: str, snapshot: FenceSnapshot) -> None:
        """Record the snapshot; under this process's attempt lock, only while the lock is still its own."""
        fence_key = self._keys.invoke_fence(request_id)
        with self._held_lock:
            held = self._held.get(request_id)
        if held is None:
            self._redis.set(fence_key, snapshot.to_json(), ex=self._ttl_s)
            return
        token, lease = held
        lock_key = self._keys.attempt_lock(request_id)
        if lease.lost or not self._write(keys=[lock_key, fence_key], args=[token, snapshot.to_json(), self._ttl_s]):
            raise AttemptSupersededError(f"the attempt lock of {request_id} lapsed; another delivery may hold it")

    def try_lock(self, request_id: str, *, ttl_s: int) -> str | None:
        """A token while this delivery alone attempts the request; None when another holds it.

        The lock lasts `ttl_s` and is renewed by this process until `unlock`.
        """
        token = secrets.token_hex(8)
        key = self._keys.attempt_lock(request_id)
        # The fence is read in the same round trip: the attempt reads it first, and this way not
        # while it holds a provider slot.
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(key, token, nx=True, ex=ttl_s)
        pipe.get(self._keys.invoke_fence(request_id))
        locked, fence = pipe.execute()
        if not locked:
            return None
        ttl_ms = int(ttl_s * 1000)
        lease = self._keeper.keep(
            f"attempt lock of {request_id}",
            lambda: bool(self._renew(keys=[key], args=[token, ttl_ms])),
            lease_s=ttl_s,
            max_hold_s=self._max_hold_s,
        )
        with self._held_lock:
            self._held[request_id] = (token, lease)
            self._prefetched[request_id] = fence
        return token

    def lock_left_s(self, request_id: str) -> float:
        """How long another delivery's attempt lock has left (0.0 when it is already gone).

        A frozen holder stops renewing, so the waiter is back when the lock lapses, not a whole
        lock lifetime later; a live holder renews, and the waiter just looks again then.
        """
        left_ms = int(self._redis.pttl(self._keys.attempt_lock(request_id)))
        return max(0.0, left_ms / 1000.0)

    def unlock(self, request_id: str, token: str) -> None:
        """Release the lock if this token still holds it (it may have expired and been retaken)."""
        with self._held_lock:
            held = self._held.get(request_id)
            if held is not None and held[0] == token:
                del self._held[request_id]
                self._prefetched.pop(request_id, None)
        if held is not None and held[0] == token:
            self._keeper.drop(held[1])
        self._unlock(keys=[self._keys.attempt_lock(request_id)], args=[token])
