"""/readyz asks Redis for a write, not a PING: a full or read-only Redis is not ready, and says why."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

from api.readiness import ReadinessChecker


class RefusingRedis:
    """Answers every SET with `error` (a PING would still answer)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def set(self, *_args: Any, **_kwargs: Any) -> bool:
        raise self.error


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), "redis: Redis is full (maxmemory"),
        (ReadOnlyError("You can't write against a read only replica."), "redis: refuses writes (ReadOnlyError)"),
        (ResponseError("MISCONF Redis is configured to save RDB snapshots"), "redis: refuses writes (MISCONF)"),
        (RedisConnectionError("Connection refused"), "redis: unreachable (ConnectionError)"),
    ],
)
def test_a_redis_that_refuses_writes_is_not_ready_and_the_reason_names_why(error: Exception, reason: str) -> None:
    """One reason line per cause; the workers are not asked when the broker (here the same Redis) fails."""
    client = RefusingRedis(error)
    checker = ReadinessChecker(
        client,  # type: ignore[arg-type]  # the probe only calls SET
        client,  # type: ignore[arg-type]
        celery=None,  # never reached: no worker is asked when the broker fails
        queue="q",
        probe_key="p:api:readyz-probe",
        timeout_s=1.0,
        cache_s=0.0,
    )
    report = anyio.run(checker.check)
    assert (report.ready, report.redis, report.broker, report.workers) == (False, False, False, 0)
    (line,) = report.reasons
    assert line.startswith(reason)
