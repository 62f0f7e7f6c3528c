"""A site's slot occupancy read from a test, the way /metrics reads it (worker.stores.slots)."""

from __future__ import annotations

import time

from redis import Redis

from worker.stores.keys import RedisKeys
from worker.stores.slots import SlotOccupancy, occupancy_from, queue_occupancy_reads

__all__ = ["slot_occupancy"]


def slot_occupancy(redis: Redis, keys: RedisKeys, site_code: str, *, now_s: float | None = None) -> SlotOccupancy:
    """Live leases and live waiters of one site at `now_s` (default: now), in one round trip."""
    with redis.pipeline(transaction=False) as pipe:
        queue_occupancy_reads(pipe, keys, site_code, now_s=time.time() if now_s is None else now_s)
        return occupancy_from(pipe.execute())
