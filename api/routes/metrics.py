"""`GET /metrics`: Prometheus text format, behind a token with role `read` (api/metrics.py)."""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter
from fastapi.responses import Response

from api.deps import ReadAccess
from api.metrics import CONTENT_TYPE, read_snapshot, render
from api.models import Problem

__all__ = ["router"]

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}, "description": "Prometheus text format"},
        401: {"model": Problem, "description": "no valid bearer token"},
        403: {"model": Problem, "description": "the token's role does not allow reading"},
        500: {"model": Problem, "description": "a bug: the error_id is in the server log"},
        503: {"model": Problem, "description": "Redis is unreachable"},
    },
    summary="Queue depth, outcomes, errors, latency, provider slots, bulk jobs, workers (Prometheus)",
)
async def metrics(access: ReadAccess) -> Response:
    ctx = access.ctx
    snapshot = await read_snapshot(ctx.settings, ctx.keys, ctx.redis, ctx.broker_redis)
    if ctx.token_file is not None:
        snapshot = replace(snapshot, tokens=len(ctx.token_file), token_file_ok=ctx.token_file.error is None)
    return Response(render(snapshot), media_type=CONTENT_TYPE)
