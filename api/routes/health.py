"""`/healthz` (the process answers) and `/readyz` (it can do its job); both open, no token."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import Ctx
from api.models import Health, Problem, Readiness

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={
        503: {
            "model": Readiness,
            "description": "Redis or the broker unreachable or refusing writes (full), or no worker consumes our queue",
        },
        500: {"model": Problem, "description": "a bug: the error_id is in the server log"},
    },
    summary="Redis and broker take writes, a worker consumes our queue",
)
async def readyz(ctx: Ctx) -> JSONResponse:
    report = await ctx.readiness.check()
    body = {
        "status": "ready" if report.ready else "not_ready",
        "redis": report.redis,
        "broker": report.broker,
        "workers": report.workers,
        "checked_at": report.checked_at.isoformat(),
        "token_file_ok": ctx.token_file is None or ctx.token_file.error is None,
        "reasons": list(report.reasons),
    }
    return JSONResponse(body, status_code=200 if report.ready else 503)
