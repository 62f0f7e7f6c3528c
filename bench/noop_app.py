"""The benchmark's baselines: uvicorn serving no-op FastAPI routes with the API's server settings.

`/noop` does nothing. `/noop-redis` does the one Redis round trip the matching API route cannot
avoid (GET: an HGETALL of the seeded request's state; POST: an LPUSH of the body to a scratch
list), through the API's own pooled `redis.asyncio` client: the floor an API route could reach
with no auth, validation or message of its own. `python -m bench.noop_app` prints the same
"listening on" line as `sccm-refresh api`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

from fastapi import FastAPI, Request
from redis.asyncio import Redis as AsyncRedis

from api.redis_async import async_redis
from api.server import connection_limits, listen, run
from config.settings import ApiSettings

__all__ = ["FLOOR_KEY_ENV", "FLOOR_LIST_ENV", "app", "main"]

# Set by the benchmark: the hash the GET floor reads and the list the POST floor pushes to.
FLOOR_KEY_ENV: Final = "BENCH_FLOOR_HASH"
FLOOR_LIST_ENV: Final = "BENCH_FLOOR_LIST"
_POOL: Final = 64


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    url = os.environ.get("SCCM_REFRESH_REDIS_URL")
    redis = async_redis(url, max_connections=_POOL) if url else None
    app.state.redis = redis
    # Read once: the floor routes must do nothing but their Redis command.
    app.state.floor_hash = os.environ.get(FLOOR_KEY_ENV, "bench-floor")
    app.state.floor_list = os.environ.get(FLOOR_LIST_ENV, "bench-floor")
    try:
        yield
    finally:
        if redis is not None:
            await redis.aclose()


app = FastAPI(lifespan=_lifespan)


def _redis(request: Request) -> AsyncRedis:
    redis: AsyncRedis | None = request.app.state.redis
    if redis is None:
        raise RuntimeError("SCCM_REFRESH_REDIS_URL is not set")
    return redis


@app.get("/noop")
async def noop_get() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/noop", status_code=202)
async def noop_post(body: dict[str, Any]) -> dict[str, int]:
    return {"keys": len(body)}


@app.get("/noop-redis")
async def noop_redis_get(request: Request) -> dict[str, int]:
    fields = await _redis(request).hgetall(request.app.state.floor_hash)
    return {"fields": len(fields)}


@app.post("/noop-redis", status_code=202)
async def noop_redis_post(request: Request, body: dict[str, Any]) -> dict[str, int]:
    length = await _redis(request).lpush(request.app.state.floor_list, str(body))
    return {"length": length}


def main() -> int:
    run(app, listen("127.0.0.1", 0), log_level="WARNING", limits=connection_limits(ApiSettings()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
