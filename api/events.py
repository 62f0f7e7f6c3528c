"""`GET /v1/events`: live outcomes as Server-Sent Events, read from the durable outcome stream.

Each connection reads `{prefix}:outcomes` with `XREAD BLOCK` in short slices (`event_block_ms`),
at most `event_batch` entries a read, from the last id it has seen: nothing published after
the stream's position at connect (or after the client's `Last-Event-ID`) is missed, and nothing
is kept in memory beyond one batch. Each event's SSE `id` is its stream id, so a client that
reconnects with `Last-Event-ID` continues exactly after the last event it received.

* request outcomes are `event: outcome`, a bulk job's final outcome `event: bulk` (both as
  published, schema in the data);
* filters (`request_id`, `correlation_id`, `site_code`) use the stream's flat fields; only the
  correlation filter parses the outcome JSON;
* a heartbeat comment is sent after `event_heartbeat_s` without an event. It carries the read
  position as `id:` (an SSE block without data sets the client's last event id without
  dispatching an event), so a filtered client that reconnects skips what was already scanned;
* a resume from an id older than the stream's oldest entry (trimmed away, see
  `LIMITS__STREAM_MAXLEN`) first gets an `event: truncated` telling the oldest id still held;
* a stream ends after `event_max_duration_s` (the client reconnects with `Last-Event-ID`); at
  most `max_event_streams` are open at once (503 beyond); a slow client stalls its own reads
  (the server's send waits for the socket), it never makes the server buffer.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio import Redis as AsyncRedis
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from worker.stores import keys as k

__all__ = [
    "BULK_EVENT",
    "OUTCOME_EVENT",
    "STREAM_START",
    "TRUNCATED_EVENT",
    "EventFilter",
    "EventStreamResponse",
    "StreamSettings",
    "StreamSlots",
    "event_stream",
    "format_event",
    "format_heartbeat",
    "is_bulk_entry",
    "is_stream_id",
    "start_position",
    "stream_id_key",
]

STREAM_START: Final = "0-0"
RECONNECT_DELAY_MS: Final = 1000
_STREAM_ID = re.compile(r"(\d{1,20})-(\d{1,20})")
OUTCOME_EVENT: Final = "outcome"
BULK_EVENT: Final = "bulk"
TRUNCATED_EVENT: Final = "truncated"


def is_stream_id(value: str) -> bool:
    """`<ms>-<seq>`, as Redis stream ids are written."""
    return _STREAM_ID.fullmatch(value) is not None


def stream_id_key(value: str) -> tuple[int, int]:
    """Sort key of a stream id (compare ids numerically, not as text)."""
    match = _STREAM_ID.fullmatch(value)
    if match is None:
        raise ValueError("not a stream id")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class EventFilter:
    request_id: str | None = None
    correlation_id: str | None = None
    site_code: str | None = None  # upper-cased

    def matches(self, fields: Mapping[str, str]) -> bool:
        # A bulk job's final outcome carries the bulk id as request_id; its children carry it as
        # correlation_id, so following a bulk's children by correlation id ends with the bulk's own.
        if self.request_id is not None and fields.get(k.STREAM_FIELD_REQUEST_ID) != self.request_id:
            return False
        if self.site_code is not None and fields.get(k.STREAM_FIELD_SITE_CODE, "").upper() != self.site_code:
            return False
        if self.correlation_id is not None and is_bulk_entry(fields):
            return fields.get(k.STREAM_FIELD_REQUEST_ID) == self.correlation_id
        if self.correlation_id is not None:
            try:
                outcome = json.loads(fields.get(k.STREAM_FIELD_OUTCOME, ""))
            except ValueError:
                return False
            return isinstance(outcome, dict) and outcome.get("correlation_id") == self.correlation_id
        return True


@dataclass(frozen=True)
class StreamSettings:
    block_ms: int
    batch: int
    heartbeat_s: float
    max_duration_s: float


def is_bulk_entry(fields: Mapping[str, str]) -> bool:
    return fields.get(k.STREAM_FIELD_KIND) == k.STREAM_KIND_BULK


def format_event(stream_id: str, data: str, event: str = OUTCOME_EVENT) -> bytes:
    """One SSE event; a data line per line of `data` (the outcome JSON is one line)."""
    lines = data.split("\n")
    body = "".join(f"data: {line}\n" for line in lines)
    return f"id: {stream_id}\nevent: {event}\n{body}\n".encode()


def format_heartbeat(position: str) -> bytes:
    """A comment that keeps the connection alive, and the read position as the last event id."""
    return f": heartbeat\nid: {position}\n\n".encode()


class StreamSlots:
    """A cap on concurrent event streams (one event loop: a plain counter is enough)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._open = 0

    @property
    def open(self) -> int:
        return self._open

    def try_acquire(self) -> bool:
        if self._open >= self._limit:
            return False
        self._open += 1
        return True

    def release(self) -> None:
        self._open = max(0, self._open - 1)


class EventStreamResponse(StreamingResponse):
    """A text/event-stream response that frees its slot and closes its generator however it ends."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], *, release: Callable[[], None]) -> None:
        super().__init__(
            content,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            media_type=self.media_type,
        )
        self._content = content
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
            close = getattr(self._content, "aclose", None)
            if close is not None:
                await close()


async def start_position(redis: AsyncRedis, stream: str) -> str:
    """The id of the newest entry (read after it), or the stream's start when it is empty."""
    newest = await redis.xrevrange(stream, count=1)
    return str(newest[0][0]) if newest else STREAM_START


async def event_stream(
    redis: AsyncRedis,
    stream: str,
    *,
    after: str,
    resumed: bool,
    event_filter: EventFilter,
    settings: StreamSettings,
) -> AsyncIterator[bytes]:
    """SSE bytes: the matching outcomes after `after`, heartbeats, until max_duration_s."""
    yield f"retry: {RECONNECT_DELAY_MS}\n\n".encode()
    position = after
    if resumed and after != STREAM_START:
        oldest = await redis.xrange(stream, count=1)
        if oldest and stream_id_key(str(oldest[0][0])) > stream_id_key(after):
            oldest_id = str(oldest[0][0])
            yield format_event(after, json.dumps({"oldest_id": oldest_id}), TRUNCATED_EVENT)
    deadline = time.monotonic() + settings.max_duration_s
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        reply = await redis.xread({stream: position}, count=settings.batch, block=settings.block_ms)
        for stream_id, fields in _entries(reply):
            position = stream_id
            if event_filter.matches(fields):
                kind = BULK_EVENT if is_bulk_entry(fields) else OUTCOME_EVENT
                yield format_event(stream_id, fields.get(k.STREAM_FIELD_OUTCOME, ""), kind)
                quiet_since = time.monotonic()
        if time.monotonic() - quiet_since >= settings.heartbeat_s:
            yield format_heartbeat(position)
            quiet_since = time.monotonic()


def _entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    # RESP2, decoded: [[stream, [(id, {field: value}), ...]]] (None when the block timed out).
    found: list[tuple[str, dict[str, str]]] = []
    for _stream, items in reply or ():
        for stream_id, fields in items:
            found.append((str(stream_id), dict(fields or {})))
    return found
