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
run at the same time (kombu restores a dropped connection's unacked messages while the first
copy still runs on its thread): `try_lock` lets only one of them attempt; the other waits.

The snapshot and what "moved" means (`landed`) are the use case's (worker/usecase/values.py);
the fences and the attempt lock are kept here, in Redis.
"""

from __future__ import annotations

import secrets

from redis import Redis

from worker.stores.keys import RedisKeys
from worker.usecase.values import FenceSnapshot

__all__ = ["FenceSnapshot", "RedisInvokeFences"]

_UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisInvokeFences:
    """Fences kept in Redis, one per request id, expiring after `ttl_s` (deleted with the final)."""

    def __init__(self, redis: Redis, keys: RedisKeys, *, ttl_s: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s
        self._unlock = redis.register_script(_UNLOCK_LUA)

    def read(self, request_id: str) -> FenceSnapshot | None:
        raw = self._redis.get(self._keys.invoke_fence(request_id))
        if raw is None:
            return None
        return FenceSnapshot.from_json(raw.decode() if isinstance(raw, bytes) else str(raw))

    def write(self, request_id: str, snapshot: FenceSnapshot) -> None:
        self._redis.set(self._keys.invoke_fence(request_id), snapshot.to_json(), ex=self._ttl_s)

    def try_lock(self, request_id: str, *, ttl_s: int) -> str | None:
        """A token while this delivery alone attempts the request; None when another holds it."""
        token = secrets.token_hex(8)
        taken = self._redis.set(self._keys.attempt_lock(request_id), token, nx=True, ex=ttl_s)
        return token if taken else None

    def unlock(self, request_id: str, token: str) -> None:
        """Release the lock if this token still holds it (it may have expired and been retaken)."""
        self._unlock(keys=[self._keys.attempt_lock(request_id)], args=[token])
