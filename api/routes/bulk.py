"""Bulk refreshes: start one (or a dry run), read its state, counts and stragglers, cancel it (producers/bulk.py)."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import AfterValidator

from api.deps import ApiContext, ReadAccess, SubmitAccess
from api.idempotency import Claim
from api.idempotent_post import IdempotencyKey, idempotent
from api.models import BulkAccepted, BulkRefreshBody, BulkStatus, BulkStragglers
from api.problems import ApiError, field_error
from api.responses import POST_ERRORS, READ_ERRORS, error_responses
from errors import ConfigError, InvalidRequestError
from worker.bulk_job import DRY_RUN_KEY
from worker.domain.ids import is_bulk_id
from worker.stores.bulk_store import MAX_STRAGGLER_DPS, BulkRecord

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["bulk"])
SUBMIT_ROUTE: Final = "/v1/bulk-refreshes"
CANCEL_ROUTE: Final = "/v1/bulk-refreshes/{bulk_id}/cancel"
_BULK_ID_RULE: Final = "'bulk-' and 32 lowercase hex digits, as minted when the bulk was submitted"


def _bulk_id(value: str) -> str:
    if not is_bulk_id(value):
        raise ValueError(f"must be {_BULK_ID_RULE}")
    return value


BulkIdPath = Annotated[str, Path(min_length=1, max_length=128, description=_BULK_ID_RULE), AfterValidator(_bulk_id)]


@router.post(
    "/bulk-refreshes",
    status_code=202,
    response_model=BulkAccepted,
    responses=error_responses(*POST_ERRORS),
    summary="Refresh every package that matches the criteria (or count them: dry_run)",
)
async def submit_bulk(
    body: BulkRefreshBody, access: SubmitAccess, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Create the bulk job (state `enumerating`) and enqueue its enumeration; 202 with its id."""
    ctx = access.ctx

    async def produce(claim: Claim | None) -> tuple[int, Any, dict[str, str]]:
        bulk_id = claim.derived_id("bulk", 0) if claim is not None else None
        submission = await ctx.producers.run(lambda: _enqueue_bulk(ctx, body, bulk_id))
        payload = BulkAccepted(
            bulk_id=submission.bulk_id,
            dry_run=submission.dry_run,
            package_classes=list(submission.package_classes),
            until=body.until,
        ).model_dump(mode="json")
        return 202, payload, {"Location": f"{SUBMIT_ROUTE}/{submission.bulk_id}"}

    return await idempotent(
        access, route=SUBMIT_ROUTE, key=idempotency_key, body=lambda: body.model_dump(mode="json"), produce=produce
    )


def _enqueue_bulk(ctx: ApiContext, body: BulkRefreshBody, bulk_id: str | None) -> Any:
    from producers.bulk import enqueue_bulk  # noqa: PLC0415 - the bulk producer pulls in the bulk runner

    try:
        return enqueue_bulk(
            ctx.producers.celery,
            body.criteria(),
            dry_run=body.dry_run,
            until=body.until,
            bulk_id=bulk_id,
            queue=ctx.settings.queue,
            settings=ctx.settings,
        )
    except ConfigError:
        # The API knows the configured sites when it is given them (SCCM_REFRESH_PROVIDERS__...).
        raise field_error(["body", "site_code"], "no SMS Provider is configured for this site") from None
    except InvalidRequestError as exc:
        # BulkRefreshBody already holds BulkCriteria's rules: only a rule the producer adds lands here.
        raise field_error(["body"], exc.message) from None


@router.get(
    "/bulk-refreshes/{bulk_id}",
    response_model=BulkStatus,
    responses=error_responses(*READ_ERRORS, 404),
    summary="A bulk job's state and counts by status",
)
async def get_bulk(bulk_id: BulkIdPath, access: ReadAccess) -> JSONResponse:
    ctx = access.ctx
    from producers.bulk import get_bulk as read_bulk  # noqa: PLC0415 - as above

    record = await ctx.producers.run(lambda: read_bulk(ctx.settings, bulk_id))
    return JSONResponse(_status(record))


@router.get(
    "/bulk-refreshes/{bulk_id}/stragglers",
    response_model=BulkStragglers,
    responses=error_responses(*READ_ERRORS, 404),
    summary="The DPs holding a bulk's packages back (until=distributed), the most first",
)
async def get_stragglers(
    bulk_id: BulkIdPath,
    access: ReadAccess,
    limit: Annotated[int, Query(ge=1, le=MAX_STRAGGLER_DPS, description="DPs listed at most")] = 50,
) -> JSONResponse:
    """Each DP with how many of the bulk's packages it does not hold at V1 yet, by row status.

    Read from a rollup the children keep as they report: bounded whatever the bulk's size.
    """
    ctx = access.ctx
    from producers.bulk import get_stragglers as read_stragglers  # noqa: PLC0415 - as above

    report = await ctx.producers.run(lambda: read_stragglers(ctx.settings, bulk_id, max_dps=limit))
    if report is None:
        raise ApiError(404, "no such bulk job (unknown or expired)")
    return JSONResponse(BulkStragglers.model_validate(report).model_dump(mode="json"))


@router.post(
    "/bulk-refreshes/{bulk_id}/cancel",
    response_model=BulkStatus,
    responses=error_responses(*POST_ERRORS, 404),
    summary="Cancel a bulk job (children already running finish)",
)
async def cancel_bulk(
    bulk_id: BulkIdPath, access: SubmitAccess, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    ctx = access.ctx
    from producers.bulk import cancel_bulk as cancel  # noqa: PLC0415 - as above

    async def produce(_claim: Claim | None) -> tuple[int, Any, dict[str, str]]:
        record = await ctx.producers.run(lambda: cancel(ctx.settings, bulk_id, app=ctx.producers.celery))
        return 200, _status(record), {}

    return await idempotent(access, route=CANCEL_ROUTE, key=idempotency_key, body=lambda: bulk_id, produce=produce)


def _status(record: BulkRecord | None) -> dict[str, Any]:
    if record is None:
        raise ApiError(404, "no such bulk job (unknown or expired)")
    # The record marks a dry run when it is done; what was asked is in its criteria from the start.
    dry_run = record.dry_run or record.criteria.get(DRY_RUN_KEY) is True
    return BulkStatus(
        bulk_id=record.bulk_id,
        site_code=record.site_code,
        state=record.state,
        enumeration_done=record.enumeration_done,
        total=record.total,
        enqueued=record.enqueued,
        pending=record.pending,
        outstanding=record.outstanding,
        finished=record.finished_children,
        counts=record.counts,
        started_at=record.started_at,
        finished_at=record.finished_at,
        error=record.error,
        dry_run=dry_run,
        package_classes=list(record.package_classes),
        sample=record.sample if dry_run else None,
        until=record.until,
        distribution=record.distribution,
    ).model_dump(mode="json")
