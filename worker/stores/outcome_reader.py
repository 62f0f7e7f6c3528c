"""Read outcomes back from Redis: the durable stream, a package's latest state, a request's final.

The writer is worker/stores/outcome_writer.py. Pub/Sub (`subscribe`) is the live, lossy view: use the
stream to catch up after a disconnect.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

from redis import Redis

from worker.domain.outcomes import Outcome, parse_timestamp
from worker.stores import keys as k
from worker.stores.bulk_outcomes import BULK_OUTCOME_SCHEMA, BulkOutcome
from worker.stores.keys import REJECTED_MARKER_PREFIX, RedisKeys

__all__ = [
    "OutcomeSubscription",
    "PackageState",
    "RequestState",
    "StreamEntry",
    "StreamEvent",
    "final_stream_id",
    "latest_state",
    "read_events",
    "read_stream",
    "request_state",
    "subscribe",
]

_FLAG_TRUE = "1"


@dataclass(frozen=True)
class StreamEntry:
    stream_id: str
    outcome: Outcome


@dataclass(frozen=True)
class PackageState:
    """The latest-state hash of one package, parsed."""

    status: str
    request_id: str
    final: bool
    updated_at: datetime
    source_version: int | None
    outcome: Outcome


def read_stream(
    redis: Redis,
    keys: RedisKeys,
    *,
    after_id: str = "0-0",
    count: int = 100,
    block_ms: int | None = None,
) -> list[StreamEntry]:
    """Up to `count` outcomes after `after_id` (exclusive), oldest first.

    block_ms waits for new entries; keep it below the client's socket timeout.
    """
    reply = redis.xread({keys.outcome_stream: after_id}, count=count, block=block_ms)
    entries: list[StreamEntry] = []
    for _stream, items in _stream_items(reply):
        for stream_id, fields in items:
            data = {_text(name): value for name, value in fields.items()}
            if _text(data.get(k.STREAM_FIELD_KIND, "")) == k.STREAM_KIND_BULK:
                continue  # a bulk job's final outcome: read_events returns those
            entries.append(StreamEntry(_text(stream_id), Outcome.from_json(data[k.STREAM_FIELD_OUTCOME])))
    return entries


@dataclass(frozen=True)
class StreamEvent:
    """Any entry of the outcome stream: a request outcome or a bulk job's final outcome."""

    stream_id: str
    outcome: Outcome | BulkOutcome


def read_events(
    redis: Redis, keys: RedisKeys, *, after_id: str = "0-0", count: int = 100, block_ms: int | None = None
) -> list[StreamEvent]:
    """Like `read_stream`, bulk outcomes included (what a live view shows)."""
    reply = redis.xread({keys.outcome_stream: after_id}, count=count, block=block_ms)
    events: list[StreamEvent] = []
    for _stream, items in _stream_items(reply):
        for stream_id, fields in items:
            data = {_text(name): value for name, value in fields.items()}
            raw = data[k.STREAM_FIELD_OUTCOME]
            bulk = _text(data.get(k.STREAM_FIELD_KIND, "")) == k.STREAM_KIND_BULK
            events.append(StreamEvent(_text(stream_id), BulkOutcome.from_json(raw) if bulk else Outcome.from_json(raw)))
    return events


def latest_state(redis: Redis, keys: RedisKeys, site_code: str, package_id: str) -> PackageState | None:
    """The package's latest-state hash, or None if nothing was ever published for it."""
    raw = redis.hgetall(keys.package_state(site_code, package_id))
    if not raw:
        return None
    data = {_text(name): _text(value) for name, value in raw.items()}
    version = data.get(k.STATE_FIELD_SOURCE_VERSION, "")
    return PackageState(
        status=data[k.STATE_FIELD_STATUS],
        request_id=data[k.STATE_FIELD_REQUEST_ID],
        final=data[k.STATE_FIELD_FINAL] == _FLAG_TRUE,
        updated_at=parse_timestamp(data[k.STATE_FIELD_UPDATED_AT]),
        source_version=int(version) if version else None,
        outcome=Outcome.from_json(data[k.STATE_FIELD_OUTCOME]),
    )


@dataclass(frozen=True)
class RequestState:
    """The latest recorded event of one request (final or not) and where it sits in the stream."""

    status: str
    final: bool
    attempt: int
    updated_at: datetime
    stream_id: str
    outcome: Outcome


def request_state(redis: Redis, keys: RedisKeys, request_id: str) -> RequestState | None:
    """The request's latest event, or None if nothing is recorded for it (or it expired)."""
    raw = redis.hgetall(keys.request_state(request_id))
    if not raw:
        return None
    data = {_text(name): _text(value) for name, value in raw.items()}
    return RequestState(
        status=data[k.STATE_FIELD_STATUS],
        final=data[k.STATE_FIELD_FINAL] == _FLAG_TRUE,
        attempt=int(data[k.STATE_FIELD_ATTEMPT]),
        updated_at=parse_timestamp(data[k.STATE_FIELD_UPDATED_AT]),
        stream_id=data[k.STATE_FIELD_STREAM_ID],
        outcome=Outcome.from_json(data[k.STATE_FIELD_OUTCOME]),
    )


def final_stream_id(redis: Redis, keys: RedisKeys, request_id: str) -> str | None:
    """The stream id of the request's latest final outcome (a rejection included), or None."""
    value = redis.get(keys.final_marker(request_id))
    return _text(value).removeprefix(REJECTED_MARKER_PREFIX) if value is not None else None


class OutcomeSubscription:
    """A live-channel subscription, confirmed by the server before the constructor returns.

    Pub/Sub is lossy (nothing is kept for a disconnected subscriber): use the stream to catch up.
    """

    def __init__(self, redis: Redis, keys: RedisKeys, *, confirm_timeout_s: float = 5.0) -> None:
        # Held for as long as the subscription: a client made for the call (`subscribe(redis_from_url(...))`)
        # would otherwise be collected at once, and redis-py's Redis.__del__ disconnects its whole pool,
        # the subscribed connection too: it reconnected and subscribed again on the next read, and
        # what was published in between was lost (a CI run's `watch` missed its first message).
        self._redis = redis
        self._pubsub = redis.pubsub()
        self._pubsub.subscribe(keys.outcome_channel)
        # Without waiting for the confirmation, a PUBLISH sent right after on another connection
        # may reach the server first and be missed.
        deadline = time.monotonic() + confirm_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                raise TimeoutError(f"no subscribe confirmation within {confirm_timeout_s} s")
            message = self._pubsub.get_message(timeout=remaining)
            if message is not None and _text(message["type"]) == "subscribe":
                return

    def get(self, timeout_s: float) -> Outcome | None:
        """The next outcome, or None if none arrives within timeout_s."""
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            message = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=remaining)
            if message is not None and _text(message["type"]) == "message":
                if _is_bulk_document(message["data"]):
                    continue  # a bulk job's final outcome; `get_any` returns those too
                return Outcome.from_json(message["data"])
        return None

    def get_any(self, timeout_s: float) -> Outcome | BulkOutcome | None:
        """The next message, a request outcome or a bulk job's final outcome."""
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            message = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=remaining)
            if message is not None and _text(message["type"]) == "message":
                data = message["data"]
                return BulkOutcome.from_json(data) if _is_bulk_document(data) else Outcome.from_json(data)
        return None

    def iter(self, *, idle_timeout_s: float, max_messages: int | None = None) -> Iterator[Outcome]:
        """Outcomes as they arrive; stops after idle_timeout_s without one, or after max_messages."""
        received = 0
        while max_messages is None or received < max_messages:
            outcome = self.get(idle_timeout_s)
            if outcome is None:
                return
            received += 1
            yield outcome

    def close(self) -> None:
        self._pubsub.close()

    def __enter__(self) -> OutcomeSubscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def subscribe(redis: Redis, keys: RedisKeys, *, confirm_timeout_s: float = 5.0) -> OutcomeSubscription:
    """Subscribe to the live channel (use as a context manager)."""
    return OutcomeSubscription(redis, keys, confirm_timeout_s=confirm_timeout_s)


def _is_bulk_document(data: Any) -> bool:
    # Cheaper than a full parse: the schema name sits in the first bytes of every document.
    return f'"schema":"{BULK_OUTCOME_SCHEMA}"' in _text(data)[:64]


def _stream_items(reply: Any) -> list[tuple[Any, Any]]:
    # RESP2 answers [[stream, entries]]; RESP3 a mapping stream -> entries (redis-py 8 nests them
    # one list deeper there).
    if not reply:
        return []
    if isinstance(reply, dict):
        return [(name, list(_entries(items))) for name, items in reply.items()]
    return [(name, list(_entries(items))) for name, items in reply]


def _entries(items: Any) -> Iterator[tuple[Any, dict[Any, Any]]]:
    for item in items:
        if isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[1], dict):
            yield item[0], item[1]
        elif isinstance(item, list):
            yield from _entries(item)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
