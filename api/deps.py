"""What the routes share: the per-process context, role checks, validated path and query parts.

A guarded route takes one dependency, `ReadAccess` or `SubmitAccess`, which is both the bearer
scheme of the OpenAPI document and the role check, and hands over the context with the caller.
One dependency rather than three (context, role, scheme): FastAPI's dependency solving is per
node and was a fifth of a request's time on the hot routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final

from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from pydantic import AfterValidator
from redis.asyncio import Redis as AsyncRedis

from api.events import StreamSlots
from api.idempotency import IdempotencyStore
from api.models import rule
from api.problems import ApiError
from api.producers import Producers
from api.readiness import ReadinessChecker
from api.token_file import TokenFile
from api.tokens import Principal, Role
from config.settings import Settings
from worker.domain.request import is_valid_id
from worker.stores.keys import RedisKeys

__all__ = [
    "ID_RULE",
    "Access",
    "ApiContext",
    "Ctx",
    "ReadAccess",
    "SubmitAccess",
    "checked_id",
    "checked_optional_id",
    "rule",
]

ID_RULE: Final = "must be 1-128 letters, digits or _ . : - (starting with a letter or digit)"


@dataclass(frozen=True)
class ApiContext:
    """Clients and shared state of one API process (built in the app's lifespan)."""

    settings: Settings
    keys: RedisKeys
    redis: AsyncRedis  # outcome reads, idempotency, coalescing markers
    events_redis: AsyncRedis  # one connection per open event stream (XREAD BLOCK)
    broker_redis: AsyncRedis  # the broker's queues (readiness, queue depth for /metrics)
    producers: Producers
    idempotency: IdempotencyStore
    readiness: ReadinessChecker
    stream_slots: StreamSlots
    token_file: TokenFile | None  # None: tokens not from a file (or authentication off)


async def _context(request: Request) -> ApiContext:
    # async: FastAPI runs a sync dependency in a worker thread, a hop per request for nothing.
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(_context)]


@dataclass(frozen=True)
class Access:
    """What a guarded route works with: the process's context and the caller."""

    ctx: ApiContext
    principal: Principal


class _RoleGate(HTTPBearer):
    """The bearer scheme (for the OpenAPI document) and the check that the caller has `role`.

    The middleware has already authenticated the token and put the principal in the scope's
    state; this only checks the role (403), so the token is never looked at twice.
    """

    def __init__(self, role: Role) -> None:
        super().__init__(
            auto_error=False,
            scheme_name="bearer",
            description="a token from the API's token file (role `submit` or `read`)",
        )
        self.role: Role = role

    async def __call__(self, request: Request) -> Access:  # type: ignore[override]  # returns the caller, not credentials
        principal = request.scope.get("state", {}).get("principal")
        if not isinstance(principal, Principal):
            raise ApiError(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})
        if not principal.allows(self.role):
            raise ApiError(
                403,
                f"this token's role does not allow this (needs {self.role})",
                headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
            )
        ctx: ApiContext = request.app.state.ctx
        return Access(ctx, principal)


SubmitAccess = Annotated[Access, Depends(_RoleGate("submit"))]
ReadAccess = Annotated[Access, Depends(_RoleGate("read"))]


def _id(value: str) -> str:
    if not is_valid_id(value):
        raise ValueError(ID_RULE)
    return value


def _optional_id(value: str | None) -> str | None:
    return None if value is None else _id(value)


checked_id = AfterValidator(_id)
checked_optional_id = AfterValidator(_optional_id)
