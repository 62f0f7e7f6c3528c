"""The invoke fence: never call RefreshPkgSource twice for one request.

Every extra refresh re-copies the package to every distribution point, so a request whose
worker died after RefreshPkgSource was accepted (but before the final outcome was written)
must not refresh again when its message is redelivered, and neither must an in-call retry
after a reply was lost on the way back.

Before invoking, the worker records a snapshot of the package (SourceVersion, LastRefreshTime,
ActionInProgress) under the request id. The next try of the same request (a redelivery, a
re-queue, an in-call retry) reads the package again first; if it moved since the snapshot, the
earlier invoke landed and the request is reported accepted without invoking again. The final
outcome's publication deletes the fence (worker/outcome_writer.lua).

The fence works between deliveries that follow one another. Two copies of one message can also
run at the same time (a dead consumer's holdings restored while a frozen one still has them):
`try_lock` lets only one of them attempt; the other waits. The lock is a short lease that the
process renews while it attempts (worker/lease_keeper.py): a killed worker's request is free again
within `limits.attempt_lock_s`. The fence is written only while the lock is still this attempt's,
so an attempt that was frozen past its lease and superseded stops before it could Invoke.

What "moved" means (`landed`), only when the package had no action pending at fence time
(ActionInProgress 0): SourceVersion rose (DistMgr processed the refresh), or LastRefreshTime
changed (the provider records the call), or ActionInProgress went from none to an action (the
provider queued the update for DistMgr). A refresh by another request in between also counts: the
content was refreshed after this request was made, which is what it asked for.

With an action already pending at fence time (an older refresh DistMgr is still on), nothing
proves this request's Invoke landed: the older pass can finish and bump SourceVersion from a
snapshot taken before this request's changes. The request invokes again; one more differential
update costs far less than stale content on every distribution point.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
from dataclasses import asdict, dataclass
from typing import Any

from redis import Redis

from errors import AttemptSupersededError
from worker.constants import RedisKeys
from worker.lease_keeper import Held, LeaseKeeper, lease_keeper
from worker.packages import PackageInfo

__all__ = ["FenceSnapshot", "RedisInvokeFences", "landed"]

_NO_ACTION = 0
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


@dataclass(frozen=True)
class FenceSnapshot:
    """The package as it was just before RefreshPkgSource was invoked."""

    source_version: int | None
    last_refresh_time: str | None
    action_in_progress: int | None
    written_at: float

    @classmethod
    def of(cls, package: PackageInfo, now: float) -> FenceSnapshot:
        return cls(package.source_version, package.last_refresh_time, package.action_in_progress, now)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> FenceSnapshot | None:
        """The snapshot, or None for anything we did not write (a fence is a hint, never trusted blindly)."""
        try:
            data: Any = json.loads(text)
            snapshot = cls(
                source_version=_int_or_none(data["source_version"]),
                last_refresh_time=_str_or_none(data["last_refresh_time"]),
                action_in_progress=_int_or_none(data["action_in_progress"]),
                written_at=float(data["written_at"]),
            )
        except (ValueError, TypeError, KeyError):
            return None
        return snapshot if math.isfinite(snapshot.written_at) else None


def landed(before: FenceSnapshot, now: PackageInfo) -> bool:
    """True when the package moved since `before`: the invoke that followed it was accepted."""
    if before.action_in_progress != _NO_ACTION:
        return False  # a refresh was already pending: a later move may be that one's
    versions = (before.source_version, now.source_version)
    if versions[0] is not None and versions[1] is not None and versions[1] > versions[0]:
        return True
    if before.last_refresh_time and now.last_refresh_time and now.last_refresh_time != before.last_refresh_time:
        return True
    return now.action_in_progress not in (None, _NO_ACTION)


class RedisInvokeFences:
    """Fences kept in Redis, one per request id, expiring after `ttl_s` (deleted with the final)."""

    def __init__(self, redis: Redis, keys: RedisKeys, *, ttl_s: int, keeper: LeaseKeeper = lease_keeper) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s
        self._keeper = keeper
        self._unlock = redis.register_script(_UNLOCK_LUA)
        self._renew = redis.register_script(_RENEW_LUA)
        self._write = redis.register_script(_WRITE_LUA)
        self._held: dict[str, tuple[str, Held]] = {}  # request id -> (token, its kept lease)
        self._held_lock = threading.Lock()

    def read(self, request_id: str) -> FenceSnapshot | None:
        raw = self._redis.get(self._keys.invoke_fence(request_id))
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
        if not self._redis.set(key, token, nx=True, ex=ttl_s):
            return None
        ttl_ms = int(ttl_s * 1000)
        lease = self._keeper.keep(
            f"attempt lock of {request_id}",
            lambda: bool(self._renew(keys=[key], args=[token, ttl_ms])),
            lease_s=ttl_s,
        )
        with self._held_lock:
            self._held[request_id] = (token, lease)
        return token

    def unlock(self, request_id: str, token: str) -> None:
        """Release the lock if this token still holds it (it may have expired and been retaken)."""
        with self._held_lock:
            held = self._held.get(request_id)
            if held is not None and held[0] == token:
                del self._held[request_id]
        if held is not None and held[0] == token:
            self._keeper.drop(held[1])
        self._unlock(keys=[self._keys.attempt_lock(request_id)], args=[token])


def _int_or_none(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("not an integer")
    return value


def _str_or_none(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value
