"""`GET /v1/events`: outcomes as Server-Sent Events (see api/events.py)."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Header, Query
from pydantic import AfterValidator
from starlette.responses import Response

from api.deps import ID_RULE, ReadAccess, checked_optional_id, rule
from api.events import EventFilter, EventStreamResponse, StreamSettings, event_stream, is_stream_id, start_position
from api.problems import ApiError
from api.responses import READ_ERRORS, error_responses
from worker.domain.packages import validate_site_code

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["events"])
_STREAM_ID_RULE: Final = "a stream id, <ms>-<seq> (the id of an event received)"


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
    responses={200: _EVENTS_DOC, **error_responses(*READ_ERRORS)},
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
    if not ctx.stream_slots.try_acquire():
        raise ApiError(503, "too many open event streams; retry later", headers={"Retry-After": "5"})
    stream = ctx.keys.outcome_stream
    try:
        resume_from = last_event_id or after
        start = resume_from or await start_position(ctx.events_redis, stream)
    except BaseException:
        ctx.stream_slots.release()
        raise
    api = ctx.settings.api
    content = event_stream(
        ctx.events_redis,
        stream,
        after=start,
        resumed=resume_from is not None,
        event_filter=EventFilter(request_id, correlation_id, site_code),
        settings=StreamSettings(api.event_block_ms, api.event_batch, api.event_heartbeat_s, api.event_max_duration_s),
    )
    return EventStreamResponse(content, release=ctx.stream_slots.release)
