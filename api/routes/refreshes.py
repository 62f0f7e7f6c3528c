"""Single refreshes: submit one or many, read a request's state or its distribution, read a package's latest state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from api.deps import ID_RULE, ApiContext, ReadAccess, SubmitAccess, checked_id, rule
from api.idempotency import Claim
from api.idempotent_post import IdempotencyKey, idempotent
from api.models import (
    PackageStatus,
    Problem,
    RefreshAccepted,
    RefreshBatch,
    RefreshDistribution,
    RefreshItem,
    RefreshStatus,
    to_request,
)
from api.problems import RETRY_AFTER_FULL, ApiError, field_error
from api.producers import BrokerUnavailableError
from api.redis_async import read_own_request_state, read_package_state
from api.request_ids import caller_request_id, own_candidates
from api.responses import POST_ERRORS, READ_ERRORS, error_responses
from producers.enqueue import new_request_id
from worker.domain.outcomes import format_timestamp
from worker.domain.packages import validate_package_id, validate_site_code
from worker.stores.redis_full import FULL_DETAIL

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["refreshes"])
SUBMIT_ROUTE: Final = "/v1/refreshes"
_RETRY_AFTER = {"Retry-After": "2"}

RequestIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        description=f"{ID_RULE}; your own request's id may be given without its `<token name>:`",
    ),
    checked_id,
]
SitePath = Annotated[
    str, Path(min_length=1, max_length=16, description="3 letters or digits"), rule(validate_site_code)
]
PackagePath = Annotated[
    str, Path(min_length=1, max_length=16, description="site code + 5 hex digits"), rule(validate_package_id)
]


@router.post(
    "/refreshes",
    status_code=202,
    response_model=RefreshAccepted,
    responses=error_responses(*POST_ERRORS),
    summary="Refresh one or many packages",
)
async def submit_refreshes(
    body: RefreshBatch, access: SubmitAccess, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Validate every item as the worker would (all or nothing), then enqueue one task per item.

    `joins` names a pending refresh of the same package that the worker will most likely
    coalesce this request into (read at submit time: advisory).
    """
    limit = access.ctx.settings.api.max_packages_per_request
    if len(body.packages) > limit:
        raise field_error(["body", "packages"], f"at most {limit} packages per call", "too_long")
    _refuse_repeated_ids(body.packages)

    async def produce(claim: Claim | None) -> tuple[int, Any, dict[str, str]]:
        return await _submit(access.ctx, access.principal.name, body.packages, claim)

    return await idempotent(
        access, route=SUBMIT_ROUTE, key=idempotency_key, body=lambda: body.model_dump(mode="json"), produce=produce
    )


def _refuse_repeated_ids(packages: list[RefreshItem]) -> None:
    seen: dict[str, int] = {}
    for index, request in enumerate(packages):
        if request.request_id is None:
            continue
        if request.request_id in seen:
            raise field_error(
                ["body", "packages", index, "request_id"],
                f"the same request_id as packages[{seen[request.request_id]}]",
                "duplicate",
            )
        seen[request.request_id] = index


async def _submit(
    ctx: ApiContext, caller: str, packages: list[RefreshItem], claim: Claim | None
) -> tuple[int, Any, dict[str, str]]:
    # Every id is the caller's: `<caller>:<its id>` (or one derived from the Idempotency-Key,
    # or a new one), so no caller can take, suppress or read back another's under a shared id.
    now = datetime.now(UTC)
    requests = [
        to_request(
            item,
            request_id=caller_request_id(
                caller,
                item.request_id or (claim.derived_id("req", index) if claim is not None else new_request_id()),
            ),
            requested_at=now,
        )
        for index, item in enumerate(packages)
    ]
    # Were the worker to claim one of these requests before the read, the marker would name
    # that very request, which reports as no leader.
    leader_keys = [ctx.keys.coalesce_leader(r.site_code, r.package_id) for r in requests]
    try:
        published = await ctx.producers.enqueue_refreshes(requests, peek=leader_keys)
    except BrokerUnavailableError as exc:
        retry = " with the same Idempotency-Key" if claim is not None else " (give request_id values to make it safe)"
        why = f"{FULL_DETAIL}: " if exc.full else ""
        raise ApiError(
            503,
            f"{why}the broker did not take the request ({exc.sent} of {len(requests)} enqueued before it failed);"
            f" retry{retry}",
            headers=RETRY_AFTER_FULL if exc.full else _RETRY_AFTER,
        ) from None
    # Plain dicts in RefreshAccepted's shape (the response model documents it; the schema
    # tests check it): building the models to dump them again cost more than the enqueue.
    refreshes = [
        {
            "request_id": request.request_id,
            "site_code": request.site_code,
            "package_id": request.package_id,
            "package_class": request.package_class,
            "joins": leader if leader and leader != request.request_id else None,
        }
        for request, leader in zip(published.requests, published.peeked, strict=True)
    ]
    headers = {"Location": f"{SUBMIT_ROUTE}/{refreshes[0]['request_id']}"} if len(refreshes) == 1 else {}
    return 202, {"refreshes": refreshes}, headers


@router.get(
    "/refreshes/{request_id}",
    response_model=RefreshStatus,
    responses=error_responses(*READ_ERRORS, 404),
    summary="The latest event of one request",
)
async def get_refresh(request_id: RequestIdPath, access: ReadAccess) -> JSONResponse:
    """Status, attempt, final or not, and the outcome document (one Redis round trip).

    An id is first looked up as the caller's own (`<token name>:<id>`), then as given: another
    caller's request is read only under its full id, never under an id both chose.
    """
    ctx = access.ctx
    found = await read_own_request_state(ctx.redis, ctx.keys, own_candidates(access.principal.name, request_id))
    if found is None:
        raise ApiError(404, "no event recorded for this request id (unknown, not started yet, or expired)")
    full_id, state = found
    return JSONResponse(
        {
            "request_id": full_id,
            "status": state.status,
            "final": state.final,
            "attempt": state.attempt,
            "updated_at": format_timestamp(state.updated_at),
            "stream_id": state.stream_id,
            "outcome": state.outcome.to_dict(),
        }
    )


_NOT_FOLLOWED: Final = (
    "the request ended without being followed to every DP (it did not ask until=distributed,"
    " or it ended before acceptance, or its package reports no SourceVersion): see GET /v1/refreshes/{request_id}"
)


@router.get(
    "/refreshes/{request_id}/distribution",
    response_model=RefreshDistribution,
    responses={
        **error_responses(*READ_ERRORS, 404),
        409: {"model": Problem, "description": "the request ended without being followed to every DP"},
    },
    summary="How far a request followed to every DP got",
)
async def get_refresh_distribution(request_id: RequestIdPath, access: ReadAccess) -> JSONResponse:
    """The latest event's distribution block: V0, V1, counts, the DP rows (stragglers first).

    `distribution` is null while the request has not been accepted yet (an event does not say
    how far its request asked to be followed until then). A request that ended without a block
    (not followed) is 409; an unknown one 404. Read as `GET /v1/refreshes/{request_id}` reads.
    """
    ctx = access.ctx
    found = await read_own_request_state(ctx.redis, ctx.keys, own_candidates(access.principal.name, request_id))
    if found is None:
        raise ApiError(404, "no event recorded for this request id (unknown, not started yet, or expired)")
    full_id, state = found
    outcome = state.outcome
    if outcome.distribution is None and state.final:
        raise ApiError(409, _NOT_FOLLOWED)
    return JSONResponse(
        {
            "request_id": full_id,
            "status": state.status,
            "final": state.final,
            "updated_at": format_timestamp(state.updated_at),
            "stream_id": state.stream_id,
            "source_version_before": outcome.source_version_before,
            "source_version_after": outcome.source_version_after,
            "distribution": outcome.distribution,
        }
    )


@router.get(
    "/sites/{site_code}/packages/{package_id}",
    response_model=PackageStatus,
    responses=error_responses(*READ_ERRORS, 404),
    summary="The latest state of one package",
)
async def get_package(site_code: SitePath, package_id: PackagePath, access: ReadAccess) -> JSONResponse:
    """What happened last to the package (the newest request's latest event)."""
    ctx = access.ctx
    state = await read_package_state(ctx.redis, ctx.keys, site_code, package_id)
    if state is None:
        raise ApiError(404, "nothing recorded for this package")
    return JSONResponse(
        {
            "site_code": site_code,
            "package_id": package_id,
            "status": state.status,
            "request_id": state.request_id,
            "final": state.final,
            "updated_at": format_timestamp(state.updated_at),
            "source_version": state.source_version,
            "outcome": state.outcome.to_dict(),
        }
    )
