"""The FastAPI application: routes, error handlers, the middleware, and the clients' lifespan.

It validates and delegates: refreshes go through `producers.enqueue` (api/producers.py), bulk jobs
through `tasks.bulk`, reads through the outcome readers. It never talks to WinRM, and keeps no
state per package or request in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from api import docs_page, routes
from api.deps import ApiContext
from api.events import StreamSlots
from api.idempotency import IdempotencyStore
from api.middleware import ApiMiddleware
from api.openapi import install_openapi
from api.problems import EXCEPTION_HANDLERS, RETRY_AFTER_FULL, problem_response
from api.producers import BrokerUnavailableError, Producers, api_celery_app
from api.readiness import READYZ_PROBE_KEY, ReadinessChecker
from api.redis_async import async_redis
from api.token_file import TokenFile
from api.tokens import Authenticator
from config.settings import Settings
from worker.stores.keys import RedisKeys
from worker.stores.redis_full import FULL_DETAIL, is_redis_full

__all__ = ["API_VERSION", "create_app"]

API_VERSION: Final = "1.0.0"
# Pooled Redis connections for everything but event streams (those have one each).
_REDIS_POOL: Final = 64
_RETRY_AFTER: Final = {"Retry-After": "2"}
_DESCRIPTION: Final = """Trigger ConfigMgr package source refreshes and follow their outcomes.

Every `/v1` route needs `Authorization: Bearer <token>`; role `submit` may trigger (and read),
role `read` may only read. POSTs accept an `Idempotency-Key`. Outcomes: docs/outcomes.md."""


def create_app(settings: Settings, *, tokens: Authenticator | None) -> FastAPI:
    """The API for `settings`; `tokens=None` turns authentication off (`--insecure-no-auth`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = _context(settings, tokens if isinstance(tokens, TokenFile) else None)
        app.state.ctx = ctx
        try:
            yield
        finally:
            await ctx.redis.aclose()
            await ctx.events_redis.aclose()
            await ctx.readiness.aclose()
            ctx.producers.celery.close()

    app = FastAPI(
        title="sccm-refresh API",
        version=API_VERSION,
        description=_DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url=None,  # api/docs_page.py: a pinned Swagger UI with integrity hashes
        redoc_url=None,
        # A redirect to the slash-less path would be built from the Host header the client sent.
        redirect_slashes=False,
    )
    for exc_type, handler in EXCEPTION_HANDLERS.items():
        app.add_exception_handler(exc_type, handler)
    app.add_exception_handler(RedisError, _on_unavailable)
    app.add_exception_handler(BrokerUnavailableError, _on_unavailable)
    for module in (routes.refreshes, routes.bulk, routes.events, routes.health, routes.metrics):
        app.include_router(module.router)
    app.include_router(docs_page.router)
    app.add_middleware(ApiMiddleware, tokens=tokens, max_body_bytes=settings.api.max_body_bytes)
    install_openapi(app, max_packages=settings.api.max_packages_per_request)
    return app


def _context(settings: Settings, token_file: TokenFile | None) -> ApiContext:
    api = settings.api
    keys = RedisKeys(settings.key_prefix)
    redis = async_redis(settings.redis_url, max_connections=_REDIS_POOL)
    # XREAD BLOCK holds its connection for up to block_ms: the socket timeout must outlast it.
    events_redis = async_redis(
        settings.redis_url, max_connections=api.max_event_streams, socket_timeout_s=api.event_block_ms / 1000 + 5
    )
    broker = redis if settings.broker_url == settings.redis_url else async_redis(settings.broker_url, max_connections=2)
    celery = api_celery_app(settings)
    return ApiContext(
        settings=settings,
        keys=keys,
        redis=redis,
        events_redis=events_redis,
        broker_redis=broker,
        producers=Producers(
            celery,
            settings,
            anyio.CapacityLimiter(api.producer_threads),
            redis=redis,
            # Task-sent events come from Celery's publish, so asking for them keeps Celery's path.
            broker=broker if _direct_publish(settings) else None,
        ),
        idempotency=IdempotencyStore(
            redis, settings.key_prefix, ttl_s=api.idempotency_ttl_s, pending_ttl_s=api.idempotency_pending_ttl_s
        ),
        readiness=ReadinessChecker(
            redis,
            broker,
            celery,
            queue=settings.queue,
            probe_key=READYZ_PROBE_KEY.format(prefix=settings.key_prefix),
            timeout_s=api.readiness_timeout_s,
            cache_s=api.readiness_cache_s,
        ),
        stream_slots=StreamSlots(
            api.max_event_streams, per_caller=api.max_event_streams_per_caller, replays=api.max_event_replays
        ),
        token_file=token_file,
    )


async def _on_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    if is_redis_full(exc) or (isinstance(exc, BrokerUnavailableError) and exc.full):
        return problem_response(503, f"{FULL_DETAIL}; retry later", headers=RETRY_AFTER_FULL)
    # A producer call can fail on either (the bulk producer writes Redis, then publishes).
    what = "Redis or the broker" if isinstance(exc, BrokerUnavailableError) else "Redis"
    return problem_response(503, f"{what} is unreachable; retry later", headers=_RETRY_AFTER)


def _direct_publish(settings: Settings) -> bool:
    """Refresh requests go out as one LPUSH (producers/celery_message.py) rather than through Celery."""
    redis_broker = settings.broker_url.startswith(("redis://", "rediss://", "unix://"))
    return redis_broker and not settings.api.task_sent_events
