"""`GET /v1/events`: outcomes as Server-Sent Events (see api/events.py)."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Header, Query
from pydantic import AfterValidator
from starlette.responses import Response

from api.deps import ID_RULE, ReadAccess, checked_optional_id, rule
from api.events import (
    EventFilter,
    EventStreamResponse,
    StreamLease,
    StreamSettings,
    event_stream,
    has_backlog,
    is_stream_id,
    start_position,
    stream_id_key,
)
from api.problems import ApiError, field_error
from api.request_ids import own_candidates
from api.responses import READ_ERRORS, error_responses
from worker.domain.packages import validate_site_code

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["events"])
_STREAM_ID_RULE: Final = "a stream id, <ms>-<seq>, each part within 64 bits (the id of an event received)"
_RETRY_AFTER: Final = {"Retry-After": "5"}


def _stream_id(value: str | None) -> str | None:
    if value is not None and not is_stream_id(value):
        raise ValueError(f"must be {_STREAM_ID_RULE}")
    return value


StreamId = AfterValidator(_stream_id)
IdQuery = Annotated[str | None, Query(max_length=128, description=ID_RULE), checked_optional_id]
_EVENTS_DOC: Final = {
    "description": (
        "text/event-stream: `event: outcome` (data: the outcome JSON, id: its stream id), "
        "`event: bulk` (a bulk job's final outcome), "
        "`event: truncated` (data: {oldest_id}) when a resume point was trimmed away, "
        "and heartbeat comments carrying the read position as id"
    ),
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


@router.get(
    "/events",
    response_class=EventStreamResponse,
    status_code=200,
    responses={200: _EVENTS_DOC, **error_responses(*READ_ERRORS, 429)},
    summary="Follow outcomes live (Server-Sent Events)",
)
async def events(
    *,
    access: ReadAccess,
    request_id: IdQuery = None,
    correlation_id: IdQuery = None,
    site_code: Annotated[
        str | None, Query(max_length=16, description="3 letters or digits"), rule(validate_site_code)
    ] = None,
    after: Annotated[
        str | None,
        Query(max_length=41, description=f"start after this event: {_STREAM_ID_RULE}; `0-0` replays"),
        StreamId,
    ] = None,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=41, description="resume after this event"), StreamId
    ] = None,
) -> Response:
    """Outcomes published from now on (or after `Last-Event-ID` / `after`), filtered, until the stream's time limit."""
    ctx = access.ctx
    lease = ctx.stream_slots.try_acquire(access.principal.name)
    if lease == "caller_full":
        raise ApiError(429, "this token has too many open event streams; retry later", headers=_RETRY_AFTER)
    if not isinstance(lease, StreamLease):
        raise ApiError(503, "too many open event streams; retry later", headers=_RETRY_AFTER)
    api = ctx.settings.api
    stream = ctx.keys.outcome_stream
    resume_from = last_event_id or after
    try:
        newest = await start_position(ctx.events_redis, stream)
        if resume_from is not None:
            if stream_id_key(resume_from) > stream_id_key(newest):
                where = ["header", "Last-Event-ID"] if last_event_id else ["query", "after"]
                raise field_error(where, "is past the stream's newest event")
            replay = await has_backlog(ctx.events_redis, stream, resume_from, api.event_batch)
            if replay and not lease.start_replay():
                raise ApiError(503, "too many event streams are replaying; retry later", headers=_RETRY_AFTER)
    except BaseException:
        lease.release()
        raise
    content = event_stream(
        ctx.events_redis,
        stream,
        after=resume_from or newest,
        resumed=resume_from is not None,
        event_filter=EventFilter(
            frozenset(own_candidates(access.principal.name, request_id)) if request_id else None,
            correlation_id,
            site_code,
        ),
        settings=StreamSettings(api.event_block_ms, api.event_batch, api.event_heartbeat_s, api.event_max_duration_s),
        caught_up=lease.end_replay,
    )
    return EventStreamResponse(
        content, lease=lease, max_duration_s=api.event_max_duration_s, send_timeout_s=api.event_send_timeout_s
    )
