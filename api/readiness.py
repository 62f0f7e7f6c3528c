"""`/readyz`: Redis and the broker take a write, and at least one worker consumes our queue.

Workers are found with Celery's remote control, `inspect().active_queues()`: a broadcast on the
broker that every worker answers with the queues it consumes. It is the workers' own answer (a
worker that is up but not consuming our queue does not count), needs no extra process (an event
receiver would) and no knowledge of kombu's keys. Its cost is the reply window (`timeout_s`, the
call waits that long for answers), so it runs in a thread, at most one at a time, and its
answer is kept `cache_s` seconds: probes every few seconds cost one broadcast per window.

Redis and the broker are each asked for a write (a SET of one small key with a short TTL), not a
PING: a full Redis (maxmemory under noeviction) or a replica left behind by a failover answers
PING but refuses every write, and the API can then take no request. The probes are not cached
(they are cheap and say whether this process can use Redis now); `reasons` says what is wrong.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import anyio
from celery import Celery
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError, ResponseError

from worker.stores.redis_full import FULL_DETAIL, is_redis_full

__all__ = ["READYZ_PROBE_KEY", "ReadinessChecker", "ReadinessReport", "count_consumers"]

# The key each probe writes (in Redis, and in the broker's Redis when it is another one).
READYZ_PROBE_KEY: Final = "{prefix}:api:readyz-probe"
_PROBE_TTL_MS: Final = 60_000


@dataclass(frozen=True)
class ReadinessReport:
    redis: bool
    broker: bool
    workers: int
    checked_at: datetime
    reasons: tuple[str, ...] = ()  # why not ready, one line each

    @property
    def ready(self) -> bool:
        return self.redis and self.broker and self.workers > 0


def count_consumers(reply: Mapping[str, Any] | None, queue: str) -> int:
    """Workers in an `active_queues()` reply ({worker: [{"name": ...}, ...]}) that consume `queue`."""
    if not isinstance(reply, Mapping):
        return 0
    return sum(
        1
        for queues in reply.values()
        if isinstance(queues, list) and any(isinstance(q, Mapping) and q.get("name") == queue for q in queues)
    )


class ReadinessChecker:
    def __init__(
        self,
        redis: AsyncRedis,
        broker: AsyncRedis,
        celery: Celery,
        *,
        queue: str,
        probe_key: str,
        timeout_s: float,
        cache_s: float,
    ) -> None:
        self._redis = redis
        self._broker = broker
        self._celery = celery
        self._queue = queue
        self._probe_key = probe_key
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._lock = anyio.Lock()
        self._limiter = anyio.CapacityLimiter(1)
        self._workers = 0
        self._checked_at = datetime.fromtimestamp(0, UTC)
        self._checked_mono: float | None = None

    async def aclose(self) -> None:
        """Close the broker's client when it is not the shared Redis client."""
        if self._broker is not self._redis:
            await self._broker.aclose()

    async def check(self) -> ReadinessReport:
        redis_problem = await self._probe(self._redis)
        broker_problem = redis_problem if self._broker is self._redis else await self._probe(self._broker)
        workers = await self._workers_consuming() if broker_problem is None else 0
        reasons = []
        if redis_problem is not None:
            reasons.append(f"redis: {redis_problem}")
        if broker_problem is not None and self._broker is not self._redis:
            reasons.append(f"broker: {broker_problem}")
        if broker_problem is None and workers == 0:
            reasons.append(f"no worker consumes the queue {self._queue!r}")
        return ReadinessReport(redis_problem is None, broker_problem is None, workers, self._checked_at, tuple(reasons))

    async def _probe(self, client: AsyncRedis) -> str | None:
        """None when `client`'s Redis takes a write now; else why not (one line, no secrets)."""
        with anyio.move_on_after(self._timeout_s):
            try:
                await client.set(self._probe_key, "1", px=_PROBE_TTL_MS)
            except ResponseError as exc:
                if is_redis_full(exc):
                    return FULL_DETAIL
                # A replica (ReadOnlyError), ACLs (NoPermissionError), MISCONF, ...: redis-py names
                # the ones it knows by class and leaves the others' code first in the text.
                known = type(exc) is not ResponseError
                return f"refuses writes ({type(exc).__name__ if known else str(exc).split(' ', 1)[0]})"
            except (RedisError, OSError) as exc:
                return f"unreachable ({type(exc).__name__})"
            return None
        return f"no answer within {self._timeout_s:g} s"

    async def _workers_consuming(self) -> int:
        async with self._lock:
            if self._fresh():
                return self._workers
            try:
                reply = await anyio.to_thread.run_sync(self._inspect, limiter=self._limiter)
            except Exception:  # any failure of the broadcast means "no worker seen"
                reply = None
            self._workers = count_consumers(reply, self._queue)
            self._checked_at = datetime.now(UTC)
            self._checked_mono = time.monotonic()
            return self._workers

    def _fresh(self) -> bool:
        return self._checked_mono is not None and time.monotonic() - self._checked_mono < self._cache_s

    def _inspect(self) -> Any:
        return self._celery.control.inspect(timeout=self._timeout_s).active_queues()
