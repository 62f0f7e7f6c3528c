"""The site-wide marker of opt-in redistribution: one RefreshNow per package and DP per window.

    marks = RedisRedistributionMarks(redis, keys)
    if marks.claim("PS1", "PS100012", nal_path, window_s=86_400): send RefreshNow

One `SET NX PX` (key `REDISTRIBUTE_MARK`, worker/stores/keys.py): the first caller of the window
gets True, every other worker and request False until the key expires. The marker is never
removed early: a Put that failed may still have landed (worker/usecase/redistribute.py).
"""

from __future__ import annotations

import math

from redis import Redis

from worker.stores.keys import RedisKeys

__all__ = ["RedisRedistributionMarks"]


class RedisRedistributionMarks:
    """`worker.usecase.redistribute.RedistributionMarks` on Redis."""

    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys

    def claim(self, site_code: str, package_id: str, nal_path: str, *, window_s: float) -> bool:
        key = self._keys.redistribute_mark(site_code, package_id, nal_path)
        window_ms = max(1, math.ceil(window_s * 1000))
        return bool(self._redis.set(key, "1", nx=True, px=window_ms))
