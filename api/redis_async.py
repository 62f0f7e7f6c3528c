"""Async Redis for the API's reads, and the workers' own parsers run over what it fetched.

The readers in worker/stores/outcome_reader.py take a sync client, issue one command and parse its
reply. The API reads with `redis.asyncio` (no blocking call on the event loop), then hands the
reply to the same reader through `Replay`, a stand-in client that returns it: one parser for
the request and package states, wherever they are read.
"""

from __future__ import annotations

from typing import Any, Final, cast

from redis import Redis
from redis.asyncio import BlockingConnectionPool
from redis.asyncio import Redis as AsyncRedis

from worker.stores.keys import RedisKeys
from worker.stores.outcome_reader import PackageState, RequestState, latest_state, request_state
from worker.stores.redis_client import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_HEALTH_CHECK_INTERVAL_S,
    DEFAULT_SOCKET_TIMEOUT_S,
)

__all__ = ["Replay", "async_redis", "read_own_request_state", "read_package_state", "read_request_state"]

# How long a request waits for a pooled connection before failing (503) rather than queueing.
POOL_WAIT_S: Final = 5.0


def async_redis(url: str, *, max_connections: int, socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S) -> AsyncRedis:
    """A bounded pool of decoded RESP2 connections (fixed reply shapes) with the workers' timeouts."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=DEFAULT_CONNECT_TIMEOUT_S,
        socket_keepalive=True,
        health_check_interval=DEFAULT_HEALTH_CHECK_INTERVAL_S,
        decode_responses=True,
        protocol=2,
    )
    return AsyncRedis.from_pool(pool)


class Replay:
    """A stand-in sync client whose `hgetall` answers with a reply fetched elsewhere."""

    def __init__(self, reply: Any) -> None:
        self._reply = reply

    def hgetall(self, _key: str) -> Any:
        return self._reply

    def as_client(self) -> Redis:
        # The readers only call hgetall on their client.
        return cast(Redis, self)


async def read_request_state(redis: AsyncRedis, keys: RedisKeys, request_id: str) -> RequestState | None:
    """`worker.stores.outcome_reader.request_state`, read with redis.asyncio (one HGETALL)."""
    reply = await redis.hgetall(keys.request_state(request_id))
    return request_state(Replay(reply).as_client(), keys, request_id)


async def read_own_request_state(
    redis: AsyncRedis, keys: RedisKeys, candidates: list[str]
) -> tuple[str, RequestState] | None:
    """The first of `candidates` with a recorded state, and that state (one pipelined round trip)."""
    async with redis.pipeline(transaction=False) as pipe:
        for request_id in candidates:
            pipe.hgetall(keys.request_state(request_id))
        replies = await pipe.execute()
    for request_id, reply in zip(candidates, replies, strict=True):
        state = request_state(Replay(reply).as_client(), keys, request_id)
        if state is not None:
            return request_id, state
    return None


async def read_package_state(
    redis: AsyncRedis, keys: RedisKeys, site_code: str, package_id: str
) -> PackageState | None:
    """`worker.stores.outcome_reader.latest_state`, read with redis.asyncio (one HGETALL)."""
    reply = await redis.hgetall(keys.package_state(site_code, package_id))
    return latest_state(Replay(reply).as_client(), keys, site_code, package_id)
