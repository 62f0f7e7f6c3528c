"""The Idempotency-Key flow shared by every POST route (see api/idempotency.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Final

import anyio
from fastapi import Header
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from api.deps import Access
from api.idempotency import IDEMPOTENCY_HEADER, Claim, Replayed, fingerprint, is_valid_key
from api.problems import field_error

__all__ = ["REPLAYED_HEADER", "IdempotencyKey", "idempotent"]

REPLAYED_HEADER: Final = "Idempotent-Replayed"

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_HEADER,
        description=(
            "makes the POST safe to retry: the same key with the same body returns the first answer "
            "(for api.idempotency_ttl_s, 24 h by default); the same key with another body is 409"
        ),
    ),
]

# What a route does once it may: (claim or None) -> (status, JSON body, extra headers).
Produce = Callable[[Claim | None], Awaitable[tuple[int, Any, dict[str, str]]]]


async def idempotent(
    access: Access,
    *,
    route: str,
    key: str | None,
    body: Callable[[], Any],
    produce: Produce,
) -> JSONResponse:
    """Run `produce` once per (caller, route, key); replay its answer for a retry with the same body.

    `body` gives the request's body as JSON, called only when there is a key to fingerprint.
    """
    if key is None:
        status, payload, headers = await produce(None)
        return JSONResponse(payload, status_code=status, headers=headers)
    if not is_valid_key(key):
        raise field_error(["header", IDEMPOTENCY_HEADER], "must be 1-255 visible ASCII characters")
    ctx = access.ctx
    begun = await ctx.idempotency.begin(access.principal.name, route, key, fingerprint(route, body()))
    if isinstance(begun, Replayed):
        return JSONResponse(begun.body, status_code=begun.status, headers={**begun.headers, REPLAYED_HEADER: "true"})
    try:
        status, payload, headers = await produce(begun)
    except BaseException:
        # Shielded: a client that hung up cancels the request, and the claim must still go.
        with anyio.CancelScope(shield=True):
            # On a Redis error the claim expires after api.idempotency_pending_ttl_s.
            with contextlib.suppress(RedisError):
                await ctx.idempotency.abandon(begun)
        raise
    await ctx.idempotency.complete(begun, status, payload, headers)
    return JSONResponse(payload, status_code=status, headers=headers)
