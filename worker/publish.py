"""Publish outcomes to Redis (stream + latest-state hash + live channel) and read them back.

One Lua script does the whole publication atomically, so a reader never sees a stream entry
without the matching hash update, and a final outcome is recorded at most once per request
(a marker key, checked and set in the same script). That makes a retried publication safe:
if Redis restarts or a reply is lost, `publish` simply runs the script again.

Latest-state rule (per package hash, docs/outcomes.md): an outcome replaces the stored state
unless (a) it belongs to the same request and the stored state is final while it is not, or
it is a non-final event of an earlier attempt; or (b) it belongs to another request whose
`requested_at` is earlier than the stored one (ISO timestamps of fixed width compare as
strings). Stream and channel always receive the event; only the hash is guarded.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from string import Template
from types import TracebackType
from typing import Any, Final

from redis import Redis
from redis import exceptions as redis_errors
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from worker import constants as k
from worker.constants import DEFAULT_FINAL_MARKER_TTL_S, DEFAULT_STREAM_MAXLEN, RedisKeys
from worker.outcomes import Outcome, format_timestamp, parse_timestamp

__all__ = [
    "DEFAULT_RETRY_DEADLINE_S",
    "OutcomePublisher",
    "OutcomeSubscription",
    "PackageState",
    "PublishResult",
    "StreamEntry",
    "final_stream_id",
    "latest_state",
    "read_stream",
    "subscribe",
    "worker_identity",
]

logger = logging.getLogger(__name__)

DEFAULT_RETRY_DEADLINE_S = 60.0
DEFAULT_RETRY_MIN_BACKOFF_S = 0.05
DEFAULT_RETRY_MAX_BACKOFF_S = 2.0
# BusyLoadingError (Redis replaying its AOF after a restart) is a ConnectionError in redis-py;
# named anyway because it is the case we most expect. AuthenticationError is a ConnectionError
# too, but a wrong password does not heal: retrying it for a minute only hides the cause.
_RETRYABLE: Final = (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.BusyLoadingError)
_NOT_RETRYABLE: Final = (redis_errors.AuthenticationError,)


def _is_redis_blip(exc: BaseException) -> bool:
    return isinstance(exc, _RETRYABLE) and not isinstance(exc, _NOT_RETRYABLE)


_FLAG_TRUE: Final = "1"
_FLAG_FALSE: Final = "0"

_PUBLISH_LUA: Final = Template(
    """
-- KEYS: 1 outcome stream, 2 latest-state hash ('' = leave alone), 3 final marker
-- ARGV: 1 json, 2 request_id, 3 package_id, 4 site_code, 5 status, 6 final ('1'/'0'),
--       7 requested_at, 8 attempt, 9 updated_at, 10 source_version ('' = unknown),
--       11 stream maxlen (approximate), 12 final marker ttl (s), 13 channel
local is_final = ARGV[6] == '1'
-- Once a request has its final outcome, nothing more is recorded for it: not a second final
-- (a redelivery), and not a late retrying event (a duplicate lineage after a lost ack).
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {0, '', 0}
end
-- Read before the first write: a wrong-type key fails here, leaving nothing half-written.
local update_state = KEYS[2] ~= ''
if update_state then
  local cur = redis.call('HMGET', KEYS[2], '$f_request_id', '$f_requested_at', '$f_final', '$f_attempt')
  if cur[1] then
    if cur[1] == ARGV[2] then
      if (not is_final) and (cur[3] == '1' or (tonumber(cur[4]) or 0) > tonumber(ARGV[8])) then
        update_state = false
      end
    elseif cur[2] and cur[2] > ARGV[7] then
      update_state = false
    end
  end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[11], '*',
  '$s_outcome', ARGV[1], '$s_request_id', ARGV[2], '$s_package_id', ARGV[3],
  '$s_site_code', ARGV[4], '$s_status', ARGV[5], '$s_final', ARGV[6])
if update_state then
  redis.call('HSET', KEYS[2], '$f_status', ARGV[5], '$f_request_id', ARGV[2], '$f_final', ARGV[6],
    '$f_updated_at', ARGV[9], '$f_source_version', ARGV[10], '$f_outcome', ARGV[1],
    '$f_requested_at', ARGV[7], '$f_attempt', ARGV[8])
end
if is_final then
  redis.call('SET', KEYS[3], id, 'NX', 'EX', ARGV[12])
end
redis.call('PUBLISH', ARGV[13], ARGV[1])
return {1, id, update_state and 1 or 0}
"""
).substitute(
    f_status=k.STATE_FIELD_STATUS,
    f_request_id=k.STATE_FIELD_REQUEST_ID,
    f_final=k.STATE_FIELD_FINAL,
    f_updated_at=k.STATE_FIELD_UPDATED_AT,
    f_source_version=k.STATE_FIELD_SOURCE_VERSION,
    f_outcome=k.STATE_FIELD_OUTCOME,
    f_requested_at=k.STATE_FIELD_REQUESTED_AT,
    f_attempt=k.STATE_FIELD_ATTEMPT,
    s_outcome=k.STREAM_FIELD_OUTCOME,
    s_request_id=k.STREAM_FIELD_REQUEST_ID,
    s_package_id=k.STREAM_FIELD_PACKAGE_ID,
    s_site_code=k.STREAM_FIELD_SITE_CODE,
    s_status=k.STREAM_FIELD_STATUS,
    s_final=k.STREAM_FIELD_FINAL,
)


def worker_identity() -> str:
    """The "host:pid" an outcome names as its worker."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class PublishResult:
    """What one publication did: whether anything was written, the stream id, the hash update."""

    published: bool  # False when the request already has its final outcome recorded
    stream_id: str | None
    state_updated: bool


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


class OutcomePublisher:
    """Writes outcomes with one atomic, idempotent-for-finals Lua script; retries Redis blips."""

    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        *,
        stream_maxlen: int = DEFAULT_STREAM_MAXLEN,
        final_marker_ttl_s: int = DEFAULT_FINAL_MARKER_TTL_S,
        retry_deadline_s: float = DEFAULT_RETRY_DEADLINE_S,
        retry_min_backoff_s: float = DEFAULT_RETRY_MIN_BACKOFF_S,
        retry_max_backoff_s: float = DEFAULT_RETRY_MAX_BACKOFF_S,
    ) -> None:
        if stream_maxlen < 1 or final_marker_ttl_s < 1:
            raise ValueError("stream_maxlen and final_marker_ttl_s must be positive")
        if retry_deadline_s < 0 or retry_min_backoff_s <= 0 or retry_max_backoff_s < retry_min_backoff_s:
            raise ValueError("retry deadline/backoff must be positive, min <= max")
        self._redis = redis
        self._keys = keys
        self._stream_maxlen = stream_maxlen
        self._final_marker_ttl_s = final_marker_ttl_s
        self._retry_deadline_s = retry_deadline_s
        self._retry_min_backoff_s = retry_min_backoff_s
        self._retry_max_backoff_s = retry_max_backoff_s
        # register_script: EVALSHA, falling back to SCRIPT LOAD when the server's script cache
        # is empty (e.g. after a restart).
        self._script = redis.register_script(_PUBLISH_LUA)

    @property
    def keys(self) -> RedisKeys:
        return self._keys

    def publish(self, outcome: Outcome) -> bool:
        """Publish; False when a final outcome for this request was already recorded."""
        return self.publish_detailed(outcome).published

    def final_recorded(self, request_id: str) -> bool:
        """True when the request already has its final outcome (a redelivery has nothing to do)."""
        return bool(self._redis.exists(self._keys.final_marker(request_id)))

    def publish_detailed(self, outcome: Outcome) -> PublishResult:
        """Publish and report what was written (see PublishResult).

        A final outcome whose first try ran but whose reply was lost reports published=False
        on the retry: it is recorded exactly once either way. Non-final events are at least once.
        """
        keys, args = self._script_arguments(outcome)
        retrying = Retrying(
            retry=retry_if_exception(_is_redis_blip),
            wait=wait_random_exponential(multiplier=self._retry_min_backoff_s, max=self._retry_max_backoff_s),
            stop=stop_after_delay(self._retry_deadline_s),
            before_sleep=_log_retry(outcome.request_id),
            reraise=True,
        )
        reply = retrying(self._script, keys=keys, args=args)
        published, stream_id, state_updated = reply
        return PublishResult(
            published=bool(int(published)),
            stream_id=_text(stream_id) or None,
            state_updated=bool(int(state_updated)),
        )

    def _script_arguments(self, outcome: Outcome) -> tuple[list[str], list[str | int]]:
        # An outcome rejected for a malformed site/package id still reaches stream and channel;
        # it just has no package hash to update.
        state_key = (
            self._keys.package_state(outcome.site_code, outcome.package_id)
            if k.is_key_part(outcome.site_code) and k.is_key_part(outcome.package_id)
            else ""
        )
        version = outcome.source_version_after
        if version is None:
            version = outcome.source_version_before
        keys = [self._keys.outcome_stream, state_key, self._keys.final_marker(outcome.request_id)]
        args: list[str | int] = [
            outcome.to_json(),
            outcome.request_id,
            outcome.package_id,
            outcome.site_code,
            outcome.status,
            _FLAG_TRUE if outcome.final else _FLAG_FALSE,
            format_timestamp(outcome.requested_at),
            outcome.attempt,
            format_timestamp(outcome.finished_at),
            "" if version is None else version,
            self._stream_maxlen,
            self._final_marker_ttl_s,
            self._keys.outcome_channel,
        ]
        return keys, args


def _log_retry(request_id: str) -> Callable[[RetryCallState], None]:
    def log(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        sleep_s = state.next_action.sleep if state.next_action is not None else 0.0
        # redis-py messages name host:port and the errno, never the password.
        logger.warning(
            "Redis unavailable while publishing outcome of request %s (%s: %s); attempt %d in %.2f s",
            request_id,
            type(exc).__name__,
            exc,
            state.attempt_number + 1,
            sleep_s,
        )

    return log


# -- readers ------------------------------------------------------------------------------------


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
            entries.append(StreamEntry(_text(stream_id), Outcome.from_json(data[k.STREAM_FIELD_OUTCOME])))
    return entries


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


def final_stream_id(redis: Redis, keys: RedisKeys, request_id: str) -> str | None:
    """The stream id of the request's final outcome, or None if none is recorded (or it expired)."""
    value = redis.get(keys.final_marker(request_id))
    return _text(value) if value is not None else None


class OutcomeSubscription:
    """A live-channel subscription, confirmed by the server before the constructor returns.

    Pub/Sub is lossy (nothing is kept for a disconnected subscriber): use the stream to catch up.
    """

    def __init__(self, redis: Redis, keys: RedisKeys, *, confirm_timeout_s: float = 5.0) -> None:
        self._pubsub = redis.pubsub()  # type: ignore[no-untyped-call]  # unannotated in redis-py
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
                return Outcome.from_json(message["data"])
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
