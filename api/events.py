"""`GET /v1/events`: live outcomes as Server-Sent Events, read from the durable outcome stream.

Each connection reads `{prefix}:outcomes` with `XREAD BLOCK` in short slices (`event_block_ms`),
at most `event_batch` entries a read, from the last id it has seen: nothing published after
the stream's position at connect (or after the client's `Last-Event-ID`) is missed, and nothing
is kept in memory beyond one batch. Each event's SSE `id` is its stream id, so a client that
reconnects with `Last-Event-ID` continues exactly after the last event it received.

* request outcomes are `event: outcome`, the non-final ones (`retrying`, a followed request's
  `distributing`) as well as the final, a bulk job's final outcome `event: bulk` (both as
  published, schema in the data);
* filters (`request_id`, `correlation_id`, `site_code`) use the stream's flat fields; only the
  correlation filter parses the outcome JSON; a request id matches the caller's own first
  (api/request_ids.py) as well as the id as given;
* a heartbeat comment is sent after `event_heartbeat_s` without an event. It carries the read
  position as `id:` (an SSE block without data sets the client's last event id without
  dispatching an event), so a filtered client that reconnects skips what was already scanned;
* a resume from an id older than the stream's oldest entry (trimmed away, see
  `LIMITS__STREAM_MAXLEN`) first gets an `event: truncated` telling the oldest id still held;
* a stream ends after `event_max_duration_s` (the client reconnects with `Last-Event-ID`),
  checked between reads and enforced around the whole response; one send may wait at most
  `event_send_timeout_s` for a client that stopped reading, then the connection is dropped, so
  a stalled client holds its slot for seconds, not forever. A slow client stalls only its own
  reads: the server never buffers for it;
* slots: at most `max_event_streams` open at once (503 beyond), `max_event_streams_per_caller`
  of them per token name (429 beyond), and `max_event_replays` catching up on a backlog longer
  than one batch (503 beyond) until they have caught up;
* a Redis error mid-stream ends the stream (the client reconnects where it was), logged once.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import anyio
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from api.connection_guard import ABORT_EXTENSION
from api.middleware import ERROR_LOGGER
from worker.stores import keys as k

__all__ = [
    "BULK_EVENT",
    "OUTCOME_EVENT",
    "STREAM_START",
    "TRUNCATED_EVENT",
    "EventFilter",
    "EventStreamResponse",
    "StreamLease",
    "StreamSettings",
    "StreamSlots",
    "event_stream",
    "format_event",
    "format_heartbeat",
    "has_backlog",
    "is_bulk_entry",
    "is_stream_id",
    "start_position",
    "stream_id_key",
]

STREAM_START: Final = "0-0"
RECONNECT_DELAY_MS: Final = 1000
_STREAM_ID = re.compile(r"(\d{1,20})-(\d{1,20})")
# Each part of a Redis stream id is an unsigned 64-bit number.
_PART_MAX: Final = 2**64 - 1
# A stream that runs this much past its deadline (a send or read that would not end) is cut.
_DEADLINE_GRACE_S: Final = 1.0
_log = logging.getLogger(ERROR_LOGGER)
OUTCOME_EVENT: Final = "outcome"
BULK_EVENT: Final = "bulk"
TRUNCATED_EVENT: Final = "truncated"


def is_stream_id(value: str) -> bool:
    """`<ms>-<seq>`, as Redis stream ids are written, each part within 64 bits."""
    match = _STREAM_ID.fullmatch(value)
    return match is not None and int(match.group(1)) <= _PART_MAX and int(match.group(2)) <= _PART_MAX


def stream_id_key(value: str) -> tuple[int, int]:
    """Sort key of a stream id (compare ids numerically, not as text)."""
    if not is_stream_id(value):
        raise ValueError("not a stream id")
    ms, _, seq = value.partition("-")
    return int(ms), int(seq)


@dataclass(frozen=True)
class EventFilter:
    # Any of these request ids (the caller's own `<name>:<id>` and the id as given).
    request_ids: frozenset[str] | None = None
    correlation_id: str | None = None
    site_code: str | None = None  # upper-cased

    def matches(self, fields: Mapping[str, str]) -> bool:
        # A bulk job's final outcome carries the bulk id as request_id; its children carry it as
        # correlation_id, so following a bulk's children by correlation id ends with the bulk's own.
        if self.request_ids is not None and fields.get(k.STREAM_FIELD_REQUEST_ID) not in self.request_ids:
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


Refusal = Literal["full", "caller_full", "replays_full"]


class StreamSlots:
    """The caps on concurrent event streams: all, per caller, replaying (one event loop: plain counters)."""

    def __init__(self, limit: int, *, per_caller: int, replays: int) -> None:
        self._limit = limit
        self._per_caller = per_caller
        self._replays_limit = replays
        self._open = 0
        self._by_caller: Counter[str] = Counter()
        self._replays = 0

    @property
    def open(self) -> int:
        return self._open

    def try_acquire(self, caller: str) -> StreamLease | Refusal:
        """A lease on one slot, or why there is none."""
        if self._open >= self._limit:
            return "full"
        if self._by_caller[caller] >= self._per_caller:
            return "caller_full"
        self._open += 1
        self._by_caller[caller] += 1
        return StreamLease(self, caller)

    def _start_replay(self) -> bool:
        if self._replays >= self._replays_limit:
            return False
        self._replays += 1
        return True

    def _end_replay(self) -> None:
        self._replays = max(0, self._replays - 1)

    def _release(self, caller: str) -> None:
        self._open = max(0, self._open - 1)
        self._by_caller[caller] -= 1
        if self._by_caller[caller] <= 0:
            del self._by_caller[caller]


class StreamLease:
    """One stream's slot (and replay permit while it catches up); each release happens once."""

    def __init__(self, slots: StreamSlots, caller: str) -> None:
        self._slots = slots
        self._caller = caller
        self._held = True
        self._replaying = False

    def start_replay(self) -> bool:
        """Take a replay permit; False when every one is taken."""
        if not self._replaying and self._slots._start_replay():
            self._replaying = True
        return self._replaying

    def end_replay(self) -> None:
        if self._replaying:
            self._replaying = False
            self._slots._end_replay()

    def release(self) -> None:
        self.end_replay()
        if self._held:
            self._held = False
            self._slots._release(self._caller)


class _StalledError(Exception):
    """A send waited past the send timeout: the client stopped reading."""


class EventStreamResponse(StreamingResponse):
    """A text/event-stream response under a deadline and a send timeout; frees its lease however it ends.

    When either runs out mid-response, the connection is aborted (the server's abort hook, see
    api/connection_guard.py): closing it would wait for a client that does not read.
    """

    media_type = "text/event-stream"

    def __init__(
        self, content: AsyncIterator[bytes], *, lease: StreamLease, max_duration_s: float, send_timeout_s: float
    ) -> None:
        super().__init__(
            content,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            media_type=self.media_type,
        )
        self._content = content
        self._lease = lease
        self._deadline_s = max_duration_s + _DEADLINE_GRACE_S
        self._send_timeout_s = send_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def timed_send(message: Message) -> None:
            with anyio.move_on_after(self._send_timeout_s) as waited:
                await send(message)
            if waited.cancelled_caught:
                raise _StalledError

        cut = False
        try:
            with anyio.move_on_after(self._deadline_s) as whole:
                await super().__call__(scope, receive, timed_send)
            cut = whole.cancelled_caught
        except _StalledError:
            cut = True
        finally:
            self._lease.release()
            close = getattr(self._content, "aclose", None)
            if close is not None:
                await close()
        if cut:
            await _abort(scope)


async def _abort(scope: Scope) -> None:
    hook = scope.get("extensions", {}).get(ABORT_EXTENSION)
    if hook is not None:
        hook["abort"]()
        # Let the server see the connection gone before the app returns (else it reports a
        # response the app left unfinished).
        await anyio.sleep(0)


async def start_position(redis: AsyncRedis, stream: str) -> str:
    """The id of the newest entry (read after it), or the stream's start when it is empty."""
    newest = await redis.xrevrange(stream, count=1)
    return str(newest[0][0]) if newest else STREAM_START


async def has_backlog(redis: AsyncRedis, stream: str, after: str, batch: int) -> bool:
    """More than one read's worth of entries after `after`: a stream from there replays."""
    entries = await redis.xrange(stream, min=f"({after}", max="+", count=batch + 1)
    return len(entries or ()) > batch


async def event_stream(
    redis: AsyncRedis,
    stream: str,
    *,
    after: str,
    resumed: bool,
    event_filter: EventFilter,
    settings: StreamSettings,
    caught_up: Callable[[], None] = lambda: None,
) -> AsyncIterator[bytes]:
    """SSE bytes: the matching outcomes after `after`, heartbeats, until max_duration_s.

    `caught_up` is called once a read returns less than a full batch (the backlog is read).
    """
    yield f"retry: {RECONNECT_DELAY_MS}\n\n".encode()
    position = after
    deadline = time.monotonic() + settings.max_duration_s
    quiet_since = time.monotonic()
    try:
        if resumed and after != STREAM_START:
            oldest = await redis.xrange(stream, count=1)
            if oldest and stream_id_key(str(oldest[0][0])) > stream_id_key(after):
                oldest_id = str(oldest[0][0])
                yield format_event(after, json.dumps({"oldest_id": oldest_id}), TRUNCATED_EVENT)
        while time.monotonic() < deadline:
            reply = await redis.xread({stream: position}, count=settings.batch, block=settings.block_ms)
            entries = _entries(reply)
            if len(entries) < settings.batch:
                caught_up()
            for stream_id, fields in entries:
                position = stream_id
                if event_filter.matches(fields):
                    kind = BULK_EVENT if is_bulk_entry(fields) else OUTCOME_EVENT
                    yield format_event(stream_id, fields.get(k.STREAM_FIELD_OUTCOME, ""), kind)
                    quiet_since = time.monotonic()
            if time.monotonic() - quiet_since >= settings.heartbeat_s:
                yield format_heartbeat(position)
                quiet_since = time.monotonic()
    except RedisError as exc:
        # The client reconnects with the last id it got: nothing is lost by ending here.
        _log.warning("event stream ended: Redis failed (%s)", type(exc).__name__)


def _entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    # RESP2, decoded: [[stream, [(id, {field: value}), ...]]] (None when the block timed out).
    found: list[tuple[str, dict[str, str]]] = []
    for _stream, items in reply or ():
        for stream_id, fields in items:
            found.append((str(stream_id), dict(fields or {})))
    return found
