"""Write outcomes to Redis: stream entry, latest-state hash, final marker and live message, atomically.

One Lua script does the whole publication atomically, so a reader never sees a stream entry
without the matching hash update, and a final outcome is recorded at most once per request
(a marker key, checked and set in the same script; the script is worker/stores/outcome_writer.lua).
That makes a retried publication safe: if Redis restarts or a reply is lost, `publish` simply
runs the script again. A rejection is recorded once per message and does not reserve the
request id (docs/outcomes.md, "Rejected requests").

Latest-state rule (per package hash, docs/outcomes.md): an outcome replaces the stored state
unless (a) it belongs to the same request and the stored state is final while it is not, or
it is a non-final event of an earlier attempt; or (b) it belongs to another request whose
`requested_at` is earlier than the stored one (ISO timestamps of fixed width compare as
strings). Stream and channel always receive the event; only the hash is guarded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Final

from redis import Redis
from redis import exceptions as redis_errors
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from config.settings import LimitSettings
from worker.domain.ids import is_key_part
from worker.domain.outcomes import STATUS_REJECTED, Outcome, format_timestamp, parse_timestamp
from worker.stores import keys as k
from worker.stores.bulk_outcomes import BulkOutcome
from worker.stores.keys import REJECTED_MARKER_PREFIX, RedisKeys
from worker.stores.redis_full import refuses_writes

__all__ = [
    "FOLLOW_SHARE_GRACE_S",
    "LATENCY_BUCKETS_S",
    "OutcomePublisher",
    "PublishResult",
    "follow_share",
    "latency_bucket",
]

logger = logging.getLogger(__name__)

# The defaults live with the settings; a writer built without them behaves like a default worker.
_LIMITS: Final = LimitSettings()
_RETRY_MIN_BACKOFF_S: Final = 0.05
_RETRY_MAX_BACKOFF_S: Final = 2.0

# BusyLoadingError (Redis replaying its AOF after a restart) is a ConnectionError in redis-py;
# named anyway because it is the case we most expect. AuthenticationError is a ConnectionError
# too, but a wrong password does not heal: retrying it for a minute only hides the cause.
_RETRYABLE: Final = (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.BusyLoadingError)
_NOT_RETRYABLE: Final = (redis_errors.AuthenticationError,)


def _is_redis_blip(exc: BaseException) -> bool:
    # A Redis refusing writes (full, MISCONF, READONLY, NOREPLICAS) heals by itself or by an operator's
    # hand: worth the same deadline.
    return (isinstance(exc, _RETRYABLE) and not isinstance(exc, _NOT_RETRYABLE)) or refuses_writes(exc)


_FLAG_TRUE: Final = "1"
_FLAG_FALSE: Final = "0"
_KIND_EVENT: Final = "event"
_KIND_FINAL: Final = "final"
_KIND_REJECTION: Final = "rejection"
# Upper bounds (s) of the request-to-final latency histogram: a plain refresh lands in the first
# buckets, transient retries in minutes, medium waits in hours.
LATENCY_BUCKETS_S: Final = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 6 * 3600.0)
LATENCY_BUCKET_INF: Final = "le:+Inf"
# Row statuses of a DP that holds a followed request back (docs/outcomes.md, "The distribution block").
_STRAGGLING: Final = frozenset({"waiting", "retrying", "failed", "unknown"})
# A followed request publishes its final by its deadline (later only if its poll waited for a slot
# or a worker): a share still there this long after is a request that will publish nothing more.
FOLLOW_SHARE_GRACE_S: Final = 3600.0


def latency_bucket(seconds: float) -> str:
    """The histogram field an outcome counts in (non-cumulative; /metrics accumulates)."""
    for bound in LATENCY_BUCKETS_S:
        if seconds <= bound:
            return f"le:{bound:g}"
    return LATENCY_BUCKET_INF


def _script(name: str) -> Template:
    return Template(resources.files("worker.stores").joinpath(name).read_text(encoding="utf-8"))


_STREAM_FIELDS: Final = {
    "s_outcome": k.STREAM_FIELD_OUTCOME,
    "s_request_id": k.STREAM_FIELD_REQUEST_ID,
    "s_package_id": k.STREAM_FIELD_PACKAGE_ID,
    "s_site_code": k.STREAM_FIELD_SITE_CODE,
    "s_status": k.STREAM_FIELD_STATUS,
    "s_final": k.STREAM_FIELD_FINAL,
    "s_kind": k.STREAM_FIELD_KIND,
}
_PUBLISH_LUA: Final = _script("outcome_writer.lua").substitute(
    _STREAM_FIELDS,
    f_status=k.STATE_FIELD_STATUS,
    f_request_id=k.STATE_FIELD_REQUEST_ID,
    f_final=k.STATE_FIELD_FINAL,
    f_updated_at=k.STATE_FIELD_UPDATED_AT,
    f_source_version=k.STATE_FIELD_SOURCE_VERSION,
    f_outcome=k.STATE_FIELD_OUTCOME,
    f_requested_at=k.STATE_FIELD_REQUESTED_AT,
    f_attempt=k.STATE_FIELD_ATTEMPT,
    f_stream_id=k.STATE_FIELD_STREAM_ID,
    rejected_prefix=REJECTED_MARKER_PREFIX,
    rejected_prefix_len=len(REJECTED_MARKER_PREFIX),
)
_BULK_LUA: Final = _script("bulk_outcome_writer.lua").substitute(_STREAM_FIELDS)


@dataclass(frozen=True)
class PublishResult:
    """What one publication did: whether anything was written, the stream id, the hash update."""

    published: bool  # False when the request already has its final outcome recorded
    stream_id: str | None
    state_updated: bool


class OutcomePublisher:
    """Writes outcomes with one atomic, idempotent-for-finals Lua script; retries Redis blips."""

    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        *,
        stream_maxlen: int = _LIMITS.stream_maxlen,
        final_marker_ttl_s: int = _LIMITS.final_marker_ttl_s,
        retry_deadline_s: float = _LIMITS.publish_deadline_s,
        retry_min_backoff_s: float = _RETRY_MIN_BACKOFF_S,
        retry_max_backoff_s: float = _RETRY_MAX_BACKOFF_S,
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
        self._bulk_script = redis.register_script(_BULK_LUA)

    @property
    def keys(self) -> RedisKeys:
        return self._keys

    @property
    def redis(self) -> Redis:
        return self._redis

    def publish(self, outcome: Outcome, *, message_key: str | None = None) -> bool:
        """Publish; False when this was already recorded (see `publish_detailed`)."""
        return self.publish_detailed(outcome, message_key=message_key).published

    def publish_bulk(self, outcome: BulkOutcome) -> bool:
        """Record a bulk job's final outcome on the stream and channel; False if it already was."""
        keys = [self._keys.outcome_stream, self._keys.bulk_final_marker(outcome.bulk_id)]
        args: list[str | int] = [
            outcome.to_json(),
            outcome.bulk_id,
            outcome.site_code,
            outcome.state,
            self._stream_maxlen,
            self._final_marker_ttl_s,
            self._keys.outcome_channel,
        ]
        published, _stream_id = self._retrying(outcome.bulk_id)(self._bulk_script, keys=keys, args=args)
        return bool(int(published))

    def final_recorded(self, request_id: str) -> bool:
        """True when the request already has its final outcome (a redelivery has nothing to do).

        A rejection does not count: it answered one message, and a fixed request may follow.
        """
        marker = self._redis.get(self._keys.final_marker(request_id))
        return marker is not None and not _text(marker).startswith(REJECTED_MARKER_PREFIX)

    def final_outcome(self, request_id: str) -> Outcome | None:
        """The request's recorded final outcome (not a rejection), or None."""
        raw = self._redis.hmget(self._keys.request_state(request_id), [k.STATE_FIELD_FINAL, k.STATE_FIELD_OUTCOME])
        if raw[0] is None or _text(raw[0]) != _FLAG_TRUE or raw[1] is None:
            return None
        outcome = Outcome.from_json(_text(raw[1]))
        return None if outcome.status == STATUS_REJECTED else outcome

    def publish_detailed(self, outcome: Outcome, *, message_key: str | None = None) -> PublishResult:
        """Publish and report what was written (see PublishResult).

        A final outcome whose first try ran but whose reply was lost reports published=False
        on the retry: it is recorded exactly once either way. Non-final events are at least once.
        """
        keys, args = self._script_arguments(outcome, message_key)
        reply = self._retrying(outcome.request_id)(self._script, keys=keys, args=args)
        published, stream_id, state_updated = reply
        return PublishResult(
            published=bool(int(published)),
            stream_id=_text(stream_id) or None,
            state_updated=bool(int(state_updated)),
        )

    def _retrying(self, what: str) -> Retrying:
        return Retrying(
            retry=retry_if_exception(_is_redis_blip),
            wait=wait_random_exponential(multiplier=self._retry_min_backoff_s, max=self._retry_max_backoff_s),
            stop=stop_after_delay(self._retry_deadline_s),
            before_sleep=_log_retry(what),
            reraise=True,
        )

    def _script_arguments(self, outcome: Outcome, message_key: str | None) -> tuple[list[str], list[str | int]]:
        # An outcome rejected for a malformed site/package id still reaches stream and channel;
        # it just has no package hash to update.
        state_key = (
            self._keys.package_state(outcome.site_code, outcome.package_id)
            if is_key_part(outcome.site_code) and is_key_part(outcome.package_id)
            else ""
        )
        version = outcome.source_version_after
        if version is None:
            version = outcome.source_version_before
        rejection = outcome.status == STATUS_REJECTED
        kind = _KIND_REJECTION if rejection else _KIND_FINAL if outcome.final else _KIND_EVENT
        # A rejection is recorded once per message: keyed by what identifies the message (a digest
        # of it, or its task id), never by the producer's request id alone.
        rejection_key = self._keys.rejection(message_key or outcome.task_id or outcome.request_id) if rejection else ""
        fence_key = self._keys.invoke_fence(outcome.request_id) if kind == _KIND_FINAL else ""
        keys = [
            self._keys.outcome_stream,
            state_key,
            self._keys.final_marker(outcome.request_id),
            rejection_key,
            fence_key,
            self._keys.request_state(outcome.request_id),
            *self._keys.metrics,
            self._keys.watch_deadlines,
            self._keys.watch_messages,
            *(self._keys.follow_metrics(outcome.site_code) if outcome.distribution is not None else ("",) * 4),
        ]
        latency_s = (outcome.finished_at - outcome.requested_at).total_seconds() if outcome.final else 0.0
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
            kind,
            outcome.site_code if is_key_part(outcome.site_code) else "unknown",
            outcome.error["kind"] if outcome.error else "",
            latency_bucket(latency_s) if outcome.final else "",
            f"{max(0.0, latency_s):.3f}",
            follow_share(outcome),
            _follow_share_due(outcome),
            f"{outcome.finished_at.timestamp():.3f}",
        ]
        return keys, args


def follow_share(outcome: Outcome) -> str:
    """A followed request's share of the per-site following counters /metrics reads ('' for a final).

    Targets by row status, and the DPs its listed rows show not done at V1 (phase `dps` only: in
    phase `source` no copy has started, so no DP is late yet). Only the listed rows are known
    (FOLLOW__MAX_DP_ROWS, stragglers first).
    """
    block = outcome.distribution
    if block is None or outcome.final:
        return ""
    stragglers = (
        sorted({row["dp"] for row in block["dps"] if row["status"] in _STRAGGLING}) if block["phase"] == "dps" else []
    )
    return json.dumps({"t": block["counts"], "s": stragglers}, separators=(",", ":"))


def _follow_share_due(outcome: Outcome) -> str:
    """When a followed request's share is dropped even if no final took it back (epoch s; '' for none)."""
    block = outcome.distribution
    if block is None or outcome.final:
        return ""
    return f"{parse_timestamp(block['deadline_at']).timestamp() + FOLLOW_SHARE_GRACE_S:.3f}"


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


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
