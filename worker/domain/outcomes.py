"""The outcome of a refresh request, as published to Redis: one versioned JSON schema, no I/O.

docs/outcomes.md explains every field and status; docs/outcome.schema.json is the JSON Schema.
An `Outcome` checks its own consistency on construction (whatever the path: builders, direct
construction, `from_json`), so a consumer never sees e.g. a final "retrying" event or an
"accepted" outcome with an error. Build outcomes with the classmethods:

    Outcome.succeeded(request, run, source_version_before=..., source_version_after=...)
    Outcome.final_failure(request, run, error)        # failed / gave_up_medium_not_ready
    Outcome.rejected(request, run, error)             # refused before calling SCCM
    Outcome.retrying(request, run, error, next_retry_at=...)
    Outcome.following(request, run, status, distribution, ...)   # until=distributed: distributing and its finals

The error object is `RefreshError.as_dict()` with a fixed key set, so no credential can ride
along in an extra attribute; messages are built from fault XML and our own text only.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal, cast, get_args

from errors import MediumNotReadyError, RefreshError
from worker.domain.distribution import MAX_NAL_PATH_CHARS
from worker.domain.follow import COUNT_KEYS
from worker.domain.ids import is_request_id_key_part

__all__ = [
    "DISTRIBUTION_KEYS",
    "DISTRIBUTION_OPTIONAL_KEYS",
    "DISTRIBUTION_ROW_KEYS",
    "ERROR_FIELDS",
    "ERROR_MESSAGE_MAX_CHARS",
    "EXTENDED_STATUS_FIELDS",
    "FINAL_STATUSES",
    "JSON_KEYS",
    "OUTCOME_SCHEMA_NAME",
    "OUTCOME_SCHEMA_VERSION",
    "REDISTRIBUTION_KEYS",
    "STATUSES",
    "STATUS_ACCEPTED",
    "STATUS_CANCELLED",
    "STATUS_DISTRIBUTED",
    "STATUS_DISTRIBUTED_WITH_FAILURES",
    "STATUS_DISTRIBUTING",
    "STATUS_DISTRIBUTION_TIMED_OUT",
    "STATUS_FAILED",
    "STATUS_GAVE_UP_MEDIUM_NOT_READY",
    "STATUS_REJECTED",
    "STATUS_RETRYING",
    "STATUS_SOURCE_UPDATED",
    "AttemptInfo",
    "InvalidOutcomeError",
    "Outcome",
    "RequestInfo",
    "Status",
    "error_to_dict",
    "format_timestamp",
    "parse_timestamp",
]

# Every outcome document names its schema; the version changes with any incompatible change
# (docs/outcomes.md, docs/outcome.schema.json).
OUTCOME_SCHEMA_NAME: Final = "sccm-refresh.outcome"
OUTCOME_SCHEMA_VERSION: Final = 3
# Version 2 documents (no `distribution`, none of the distribution statuses) are still read.
_READABLE_VERSIONS: Final = (2, 3)

Status = Literal[
    "accepted",
    "source_updated",
    "failed",
    "gave_up_medium_not_ready",
    "rejected",
    "cancelled",
    "retrying",
    "distributing",
    "distributed",
    "distributed_with_failures",
    "distribution_timed_out",
]
STATUSES: Final[tuple[Status, ...]] = get_args(Status)
STATUS_ACCEPTED: Final = "accepted"
STATUS_SOURCE_UPDATED: Final = "source_updated"
STATUS_FAILED: Final = "failed"
STATUS_GAVE_UP_MEDIUM_NOT_READY: Final = "gave_up_medium_not_ready"
STATUS_REJECTED: Final = "rejected"
STATUS_CANCELLED: Final = "cancelled"
STATUS_RETRYING: Final = "retrying"
STATUS_DISTRIBUTING: Final = "distributing"
STATUS_DISTRIBUTED: Final = "distributed"
STATUS_DISTRIBUTED_WITH_FAILURES: Final = "distributed_with_failures"
STATUS_DISTRIBUTION_TIMED_OUT: Final = "distribution_timed_out"
_NOT_FINAL: Final = frozenset({STATUS_RETRYING, STATUS_DISTRIBUTING})
FINAL_STATUSES: Final = frozenset(s for s in STATUSES if s not in _NOT_FINAL)
# A request followed to every DP (until=distributed): its refresh was accepted; the statuses say
# how far the content got, and each carries a `distribution` block (only they do).
_FOLLOWED_STATUSES: Final = frozenset(
    {STATUS_DISTRIBUTING, STATUS_DISTRIBUTED, STATUS_DISTRIBUTED_WITH_FAILURES, STATUS_DISTRIBUTION_TIMED_OUT}
)
_SUCCESS_STATUSES: Final = frozenset({STATUS_ACCEPTED, STATUS_SOURCE_UPDATED})
_ACCEPTED_STATUSES: Final = _SUCCESS_STATUSES | _FOLLOWED_STATUSES
# Statuses that carry no error: the refresh was accepted, or it was never attempted (cancelled).
_NO_ERROR_STATUSES: Final = _ACCEPTED_STATUSES | {STATUS_CANCELLED}
# A joined request ends as its leader did; never joined are a refusal, a cancel, a non-final event.
_JOINABLE_STATUSES: Final = frozenset(
    s for s in STATUSES if s not in (STATUS_REJECTED, STATUS_CANCELLED, STATUS_RETRYING, STATUS_DISTRIBUTING)
)

# Exactly the keys of RefreshError.as_dict() / ExtendedStatus.as_dict(): nothing else may ride along.
ERROR_FIELDS: Final = ("kind", "message", "code", "wsman_code", "wmi_code", "http_status", "extended_status")
EXTENDED_STATUS_FIELDS: Final = (
    "class",
    "description",
    "error_code",
    "operation",
    "parameter_info",
    "provider_name",
    "status_code",
)
_ERROR_INT_FIELDS: Final = ("code", "wsman_code", "wmi_code", "http_status")
_EXTENDED_INT_FIELDS: Final = frozenset({"error_code", "status_code"})
# A fault's text can be long (stack-like provider messages); the stream keeps 100k entries.
ERROR_MESSAGE_MAX_CHARS: Final = 2000
_MEDIUM_NOT_READY_KIND: Final = MediumNotReadyError.kind
_UINT32_MAX: Final = 2**32 - 1

# Fixed width, UTC, milliseconds, "Z": lexicographic order is chronological order, which the
# publisher's Lua script relies on to compare requested_at.
_TIMESTAMP_RE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

# The `distribution` block (worker/domain/follow_report.py builds it; docs/outcomes.md).
DISTRIBUTION_KEYS: Final = (
    "phase",
    "targets",
    "counts",
    "dps",
    "dps_omitted",
    "following_since",
    "deadline_at",
    "next_poll_at",
    "polls",
)
# Present only for a request that redistributes its failed DPs (added to version 3, optional).
DISTRIBUTION_OPTIONAL_KEYS: Final = ("redistributed",)
REDISTRIBUTION_KEYS: Final = ("dp", "nal_path", "at", "error")
DISTRIBUTION_ROW_KEYS: Final = ("dp", "nal_path", "status", "state", "source_version", "message_id", "message_at")
_DISTRIBUTION_PHASES: Final = ("source", "dps")
_DISTRIBUTION_MAX_ROWS: Final = 1000
_DISTRIBUTION_ROW_TEXT: Final = {"dp": 255, "nal_path": MAX_NAL_PATH_CHARS, "message_at": 64}


class InvalidOutcomeError(ValueError):
    """An outcome that breaks the schema or its consistency rules."""


def format_timestamp(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and "Z" (e.g. 2024-05-01T12:00:00.123Z)."""
    utc = _as_utc_ms(moment, "timestamp")
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T"
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}.{utc.microsecond // 1000:03d}Z"
    )


def parse_timestamp(text: str) -> datetime:
    """The inverse of format_timestamp; refuses any other spelling."""
    if not isinstance(text, str) or not _TIMESTAMP_RE.fullmatch(text):
        raise InvalidOutcomeError(f"timestamp must look like 2024-05-01T12:00:00.123Z, got {str(text)[:40]!r}")
    try:
        # The pattern above pins the spelling; fromisoformat (C) reads it 20x faster than strptime.
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidOutcomeError(f"invalid timestamp {text!r}: {exc}") from None


def error_to_dict(error: RefreshError) -> dict[str, Any]:
    """The outcome's error object: `as_dict()` with the message capped."""
    data = error.as_dict()
    message = str(data.get("message") or "")
    if len(message) > ERROR_MESSAGE_MAX_CHARS:
        message = message[: ERROR_MESSAGE_MAX_CHARS - 1] + "…"
    data["message"] = message
    return data


@dataclass(frozen=True)
class RequestInfo:
    """What was asked, the same for every event of one request."""

    request_id: str
    site_code: str
    package_class: str
    package_id: str
    requested_at: datetime
    correlation_id: str | None = None
    task_id: str | None = None
    package_name: str | None = None


@dataclass(frozen=True)
class AttemptInfo:
    """The attempt an event reports: its 1-based number, total attempts so far, when and where."""

    attempt: int
    attempts: int
    started_at: datetime
    finished_at: datetime
    worker: str  # "host:pid"
    # Measured with a monotonic clock by the caller; None -> finished_at - started_at.
    duration_ms: float | None = None


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """One published event about a refresh request (schema `OUTCOME_SCHEMA_NAME`, version `OUTCOME_SCHEMA_VERSION`)."""

    request_id: str
    correlation_id: str | None
    # Set when this request joined another request's pending refresh instead of refreshing
    # again: that request's id (its outcome is this one's, see docs/outcomes.md "Coalescing").
    joined_request_id: str | None
    task_id: str | None
    site_code: str
    package_class: str
    package_id: str
    package_name: str | None
    status: Status
    return_value: int | None
    error: dict[str, Any] | None = field(hash=False)
    attempt: int
    attempts: int
    next_retry_at: datetime | None
    source_version_before: int | None
    source_version_after: int | None
    # Only a request followed to every DP has one (schema version 3): what the DPs hold.
    distribution: dict[str, Any] | None = field(default=None, hash=False)
    requested_at: datetime
    started_at: datetime
    finished_at: datetime
    duration_ms: float
    worker: str

    def __post_init__(self) -> None:
        for name in ("requested_at", "started_at", "finished_at", "next_retry_at"):
            value = getattr(self, name)
            if value is not None:
                # Stored at the published precision so a JSON round trip compares equal.
                object.__setattr__(self, name, _as_utc_ms(value, name))
        if self.error is not None:
            object.__setattr__(self, "error", _checked_error(self.error))
        if self.distribution is not None:
            object.__setattr__(self, "distribution", _checked_distribution(self.distribution))
        _check_identity(self)
        _check_text(self)
        _check_status(self)
        _check_numbers(self)
        _check_times(self)

    @property
    def final(self) -> bool:
        """Derived from the status so it can never disagree with it: only "retrying" and "distributing" are not."""
        return self.status not in _NOT_FINAL

    # -- builders -------------------------------------------------------------------------

    @classmethod
    def succeeded(
        cls,
        request: RequestInfo,
        run: AttemptInfo,
        *,
        source_version_before: int | None = None,
        source_version_after: int | None = None,
    ) -> Outcome:
        """RefreshPkgSource returned 0: "source_updated" if SourceVersion rose, else "accepted"."""
        rose = (
            source_version_before is not None
            and source_version_after is not None
            and source_version_after > source_version_before
        )
        return cls._build(
            request,
            run,
            status=STATUS_SOURCE_UPDATED if rose else STATUS_ACCEPTED,
            error=None,
            return_value=0,
            source_version_before=source_version_before,
            source_version_after=source_version_after,
        )

    @classmethod
    def final_failure(
        cls,
        request: RequestInfo,
        run: AttemptInfo,
        error: RefreshError,
        *,
        return_value: int | None = None,
        source_version_before: int | None = None,
        source_version_after: int | None = None,
    ) -> Outcome:
        """The last word after a permanent or exhausted error; a medium never ready is its own status."""
        status = error.final_status
        if status not in (STATUS_FAILED, STATUS_GAVE_UP_MEDIUM_NOT_READY):
            raise InvalidOutcomeError(f"{type(error).__name__} declares an unknown final status {status!r}")
        return cls._build(
            request,
            run,
            status=cast(Status, status),
            error=error,
            return_value=return_value,
            source_version_before=source_version_before,
            source_version_after=source_version_after,
        )

    @classmethod
    def rejected(cls, request: RequestInfo, run: AttemptInfo, error: RefreshError) -> Outcome:
        """Refused before calling SCCM (bad arguments, unforced task sequence, unknown site)."""
        return cls._build(request, run, status=STATUS_REJECTED, error=error)

    @classmethod
    def cancelled(cls, request: RequestInfo, run: AttemptInfo) -> Outcome:
        """Never attempted: the bulk job it belonged to was cancelled first."""
        return cls._build(request, run, status=STATUS_CANCELLED, error=None)

    def joined_by(self, request: RequestInfo) -> Outcome:
        """This (final) outcome as the final of `request`, which joined this request's refresh."""
        if self.status not in _JOINABLE_STATUSES:
            raise InvalidOutcomeError(f"a request cannot end by joining a {self.status!r} outcome")
        return replace(
            self,
            request_id=request.request_id,
            correlation_id=request.correlation_id,
            joined_request_id=self.request_id,
            task_id=request.task_id,
            requested_at=request.requested_at,
            package_name=self.package_name or request.package_name,
        )

    @classmethod
    def retrying(
        cls,
        request: RequestInfo,
        run: AttemptInfo,
        error: RefreshError,
        *,
        next_retry_at: datetime,
        return_value: int | None = None,
        source_version_before: int | None = None,
    ) -> Outcome:
        """A non-final event: this attempt failed with a retryable error, the next one is scheduled."""
        if not error.retryable:
            raise InvalidOutcomeError(f"a {error.kind!r} error is permanent: publish a final failure instead")
        return cls._build(
            request,
            run,
            status=STATUS_RETRYING,
            error=error,
            return_value=return_value,
            source_version_before=source_version_before,
            next_retry_at=next_retry_at,
        )

    @classmethod
    def following(
        cls,
        request: RequestInfo,
        run: AttemptInfo,
        status: str,
        distribution: dict[str, Any],
        *,
        source_version_before: int | None,
        source_version_after: int | None,
    ) -> Outcome:
        """A request followed to every DP: `distributing` (non-final) or one of its three finals."""
        if status not in _FOLLOWED_STATUSES:
            raise InvalidOutcomeError(f"{status!r} is not a status of a request followed to every DP")
        return cls._build(
            request,
            run,
            status=cast(Status, status),
            error=None,
            return_value=0,
            source_version_before=source_version_before,
            source_version_after=source_version_after,
            distribution=distribution,
        )

    @classmethod
    def _build(
        cls,
        request: RequestInfo,
        run: AttemptInfo,
        *,
        status: Status,
        error: RefreshError | None,
        return_value: int | None = None,
        source_version_before: int | None = None,
        source_version_after: int | None = None,
        next_retry_at: datetime | None = None,
        distribution: dict[str, Any] | None = None,
    ) -> Outcome:
        duration_ms = run.duration_ms
        if duration_ms is None:
            duration_ms = (run.finished_at - run.started_at).total_seconds() * 1000.0
        return cls(
            request_id=request.request_id,
            correlation_id=request.correlation_id,
            joined_request_id=None,
            task_id=request.task_id,
            site_code=request.site_code,
            package_class=request.package_class,
            package_id=request.package_id,
            package_name=request.package_name,
            status=status,
            return_value=return_value,
            error=error_to_dict(error) if error is not None else None,
            attempt=run.attempt,
            attempts=run.attempts,
            next_retry_at=next_retry_at,
            source_version_before=source_version_before,
            source_version_after=source_version_after,
            distribution=distribution,
            requested_at=request.requested_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            duration_ms=duration_ms,
            worker=run.worker,
        )

    # -- JSON -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready mapping, keys in schema order (the dataclass's, with `final` after `status`)."""
        data: dict[str, Any] = {"schema": OUTCOME_SCHEMA_NAME, "version": OUTCOME_SCHEMA_VERSION}
        for name in _FIELD_NAMES:
            data[name] = _encode(name, getattr(self, name))
            if name == "status":
                data["final"] = self.final
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any) -> Outcome:
        """Parse and check a mapping; refuses other schemas, other versions, missing or unknown keys."""
        if not isinstance(data, dict):
            raise InvalidOutcomeError("an outcome must be a JSON object")
        if data.get("schema") != OUTCOME_SCHEMA_NAME:
            raise InvalidOutcomeError(f"not an outcome: schema is {str(data.get('schema'))[:60]!r}")
        version = data.get("version")
        if isinstance(version, bool) or version not in _READABLE_VERSIONS:
            raise InvalidOutcomeError(
                f"unsupported outcome version {str(version)[:20]!r} (this reader: {OUTCOME_SCHEMA_VERSION})"
            )
        if version == 2:
            if "distribution" in data or data.get("status") in _FOLLOWED_STATUSES:
                raise InvalidOutcomeError("a version 2 outcome has no distribution block nor distribution status")
            data = {**data, "distribution": None}
        missing = JSON_KEYS - data.keys()
        unknown = data.keys() - JSON_KEYS
        if missing or unknown:
            raise InvalidOutcomeError(f"outcome keys: missing {sorted(missing)}, unknown {sorted(unknown)[:10]}")
        if data["final"] is not (data["status"] not in _NOT_FINAL):
            raise InvalidOutcomeError(f"final={data['final']!r} contradicts status {str(data['status'])[:40]!r}")
        return cls(**{name: _decode(name, data[name]) for name in _FIELD_NAMES})

    @classmethod
    def from_json(cls, text: str | bytes) -> Outcome:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidOutcomeError(f"outcome is not JSON: {exc}") from None
        return cls.from_dict(data)


# One source for the outcome's fields: the dataclass. JSON adds the envelope (schema, version) and
# the derived `final`; timestamps travel as fixed-width text, duration_ms rounded to microseconds.
_FIELD_NAMES: Final = tuple(f.name for f in fields(Outcome))
JSON_KEYS: Final = frozenset({"schema", "version", "final", *_FIELD_NAMES})
_TIMESTAMP_FIELDS: Final = frozenset({"requested_at", "started_at", "finished_at", "next_retry_at"})


def _encode(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _TIMESTAMP_FIELDS:
        return format_timestamp(value)
    if name == "error":
        return _copy_error(value)
    if name == "distribution":
        block = {**value, "counts": dict(value["counts"]), "dps": [dict(row) for row in value["dps"]]}
        if "redistributed" in value:
            block["redistributed"] = [_checked_redistribution(entry) for entry in value["redistributed"]]
        return block
    if name == "duration_ms":
        return round(value, 3)
    return value


def _decode(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _TIMESTAMP_FIELDS:
        return parse_timestamp(value)
    if name == "duration_ms":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidOutcomeError("duration_ms must be a number")
        return float(value)
    return value


# -- consistency rules (docs/outcomes.md, "Consistency rules") ---------------------------------


def _check_identity(outcome: Outcome) -> None:
    for name in ("request_id", "site_code", "package_class", "package_id", "worker"):
        value = getattr(outcome, name)
        if not isinstance(value, str) or not value:
            raise InvalidOutcomeError(f"{name} must be a non-empty string")
    if not is_request_id_key_part(outcome.request_id):
        # It names the final marker key that makes final publication idempotent.
        raise InvalidOutcomeError("request_id must be 1-256 characters without whitespace")
    for name in ("correlation_id", "joined_request_id", "task_id", "package_name"):
        value = getattr(outcome, name)
        if value is not None and not isinstance(value, str):
            raise InvalidOutcomeError(f"{name} must be a string or null")


def _check_text(outcome: Outcome) -> None:
    # Redis and every consumer take UTF-8: a lone surrogate (legal in a Python str, and in JSON a
    # producer sends) must never reach the writer, where it would fail the publication itself.
    texts = [getattr(outcome, f) for f in _FIELD_NAMES if isinstance(getattr(outcome, f), str)]
    if outcome.error is not None:
        texts.extend(v for v in outcome.error.values() if isinstance(v, str))
        extended = outcome.error["extended_status"]
        texts.extend(v for v in (extended or {}).values() if isinstance(v, str))
    for text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidOutcomeError("outcome text must be valid Unicode (no lone surrogates)") from None


def _check_status(outcome: Outcome) -> None:
    status = outcome.status
    if status not in STATUSES:
        raise InvalidOutcomeError(f"unknown status {str(status)[:40]!r}")
    if (outcome.error is None) != (status in _NO_ERROR_STATUSES):
        raise InvalidOutcomeError(f"status {status!r} {'forbids' if outcome.error else 'requires'} an error")
    if status in _ACCEPTED_STATUSES and outcome.return_value != 0:
        raise InvalidOutcomeError(f"status {status!r} means RefreshPkgSource returned 0")
    if status in (STATUS_REJECTED, STATUS_CANCELLED) and outcome.return_value is not None:
        raise InvalidOutcomeError(f"a {status} request never called RefreshPkgSource: return_value must be null")
    if outcome.joined_request_id is not None and status not in _JOINABLE_STATUSES:
        raise InvalidOutcomeError(f"a {status!r} outcome cannot name a joined request")
    before, after = outcome.source_version_before, outcome.source_version_after
    rose = before is not None and after is not None and after > before
    if status == STATUS_SOURCE_UPDATED and not rose:
        raise InvalidOutcomeError("source_updated needs source_version_after > source_version_before")
    if status == STATUS_ACCEPTED and rose:
        raise InvalidOutcomeError("SourceVersion rose: the status is source_updated, not accepted")
    if status in (STATUS_FAILED, STATUS_GAVE_UP_MEDIUM_NOT_READY) and outcome.error is not None:
        medium = outcome.error["kind"] == _MEDIUM_NOT_READY_KIND
        if medium != (status == STATUS_GAVE_UP_MEDIUM_NOT_READY):
            raise InvalidOutcomeError(
                "a final medium_not_ready error is gave_up_medium_not_ready, and only that status carries it"
            )
    if (outcome.next_retry_at is None) == (status == STATUS_RETRYING):
        raise InvalidOutcomeError("next_retry_at is required for retrying and forbidden otherwise")
    _check_followed(outcome)


def _check_followed(outcome: Outcome) -> None:
    """Only a request followed to every DP carries a distribution block, and its phase fits its status."""
    status, block = outcome.status, outcome.distribution
    if (block is None) == (status in _FOLLOWED_STATUSES):
        raise InvalidOutcomeError(f"status {status!r} {'forbids' if block else 'requires'} distribution")
    if block is None:
        return
    before, after = outcome.source_version_before, outcome.source_version_after
    if block["phase"] == "dps" and (before is None or after is None or after <= before):
        raise InvalidOutcomeError("following the DPs needs source_version_after (V1) > source_version_before (V0)")
    if status in (STATUS_DISTRIBUTED, STATUS_DISTRIBUTED_WITH_FAILURES) and block["phase"] != "dps":
        raise InvalidOutcomeError(f"{status} ends following the DPs: its phase is dps")
    if (block["next_poll_at"] is None) != outcome.final:
        raise InvalidOutcomeError("next_poll_at is set while following and only then")


def _check_numbers(outcome: Outcome) -> None:
    if not _is_int(outcome.attempt) or outcome.attempt < 1:
        raise InvalidOutcomeError("attempt is 1-based")
    if not _is_int(outcome.attempts) or outcome.attempts < outcome.attempt:
        raise InvalidOutcomeError("attempts (total so far) cannot be less than attempt")
    if outcome.return_value is not None and not _is_int(outcome.return_value):
        raise InvalidOutcomeError("return_value must be an integer or null")
    for name in ("source_version_before", "source_version_after"):
        value = getattr(outcome, name)
        if value is not None and (not _is_int(value) or not 0 <= value <= _UINT32_MAX):
            raise InvalidOutcomeError(f"{name} is a uint32 or null")
    duration = outcome.duration_ms
    if isinstance(duration, bool) or not isinstance(duration, int | float) or not math.isfinite(duration):
        raise InvalidOutcomeError("duration_ms must be a finite number")
    if duration < 0:
        raise InvalidOutcomeError("duration_ms cannot be negative")


def _check_times(outcome: Outcome) -> None:
    # requested_at comes from the producer's clock, so it is not compared with the worker's.
    if outcome.finished_at < outcome.started_at:
        raise InvalidOutcomeError("finished_at is before started_at")
    if outcome.next_retry_at is not None and outcome.next_retry_at < outcome.finished_at:
        raise InvalidOutcomeError("next_retry_at is before finished_at")


def _checked_error(error: Any) -> dict[str, Any]:
    if not isinstance(error, dict) or set(error) != set(ERROR_FIELDS):
        raise InvalidOutcomeError(f"error must have exactly the keys {list(ERROR_FIELDS)}")
    if not isinstance(error["kind"], str) or not error["kind"]:
        raise InvalidOutcomeError("error.kind must be a non-empty string")
    message = error["message"]
    if not isinstance(message, str) or len(message) > ERROR_MESSAGE_MAX_CHARS:
        raise InvalidOutcomeError(f"error.message must be a string of at most {ERROR_MESSAGE_MAX_CHARS} chars")
    for name in _ERROR_INT_FIELDS:
        if error[name] is not None and not _is_int(error[name]):
            raise InvalidOutcomeError(f"error.{name} must be an integer or null")
    checked = dict(error)
    checked["extended_status"] = _checked_extended_status(error["extended_status"])
    return checked


def _checked_distribution(block: Any) -> dict[str, Any]:
    """A copy of the `distribution` block if it has exactly the documented shape."""
    if not isinstance(block, dict) or set(block) - set(DISTRIBUTION_OPTIONAL_KEYS) != set(DISTRIBUTION_KEYS):
        raise InvalidOutcomeError(
            f"distribution must have exactly the keys {list(DISTRIBUTION_KEYS)} (and optionally "
            f"{list(DISTRIBUTION_OPTIONAL_KEYS)})"
        )
    if block["phase"] not in _DISTRIBUTION_PHASES:
        raise InvalidOutcomeError(f"distribution.phase must be one of {list(_DISTRIBUTION_PHASES)}")
    counts = block["counts"]
    if not isinstance(counts, dict) or set(counts) != set(COUNT_KEYS):
        raise InvalidOutcomeError(f"distribution.counts must have exactly the keys {list(COUNT_KEYS)}")
    for name, value in (*counts.items(), ("dps_omitted", block["dps_omitted"]), ("polls", block["polls"])):
        _check_count(name, value)
    if block["targets"] is not None:
        _check_count("targets", block["targets"])
    for name in ("following_since", "deadline_at", "next_poll_at"):
        if block[name] is not None or name != "next_poll_at":
            parse_timestamp(block[name])
    rows = block["dps"]
    if not isinstance(rows, list) or len(rows) > _DISTRIBUTION_MAX_ROWS:
        raise InvalidOutcomeError(f"distribution.dps must be a list of at most {_DISTRIBUTION_MAX_ROWS} rows")
    checked = {**block, "counts": dict(counts), "dps": [_checked_distribution_row(row) for row in rows]}
    if "redistributed" in block:
        sent = block["redistributed"]
        if not isinstance(sent, list) or len(sent) > _DISTRIBUTION_MAX_ROWS * 10:
            raise InvalidOutcomeError("distribution.redistributed must be a list of at most 10,000 entries")
        checked["redistributed"] = [_checked_redistribution(entry) for entry in sent]
    return checked


def _checked_redistribution(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict) or set(entry) != set(REDISTRIBUTION_KEYS):
        raise InvalidOutcomeError(f"a redistribution must have exactly the keys {list(REDISTRIBUTION_KEYS)}")
    for name in ("dp", "nal_path"):
        value, limit = entry[name], _DISTRIBUTION_ROW_TEXT[name]
        if not (isinstance(value, str) and 0 < len(value) <= limit):
            raise InvalidOutcomeError(f"redistribution {name} must be a string of 1-{limit} characters")
    parse_timestamp(entry["at"])
    error = entry["error"]
    if error is None:
        return dict(entry)
    if not (
        isinstance(error, dict)
        and set(error) == {"kind", "message"}
        and all(isinstance(error[k], str) and len(error[k]) <= ERROR_MESSAGE_MAX_CHARS for k in error)
    ):
        raise InvalidOutcomeError("redistribution error must be null or {kind, message} strings")
    return {**entry, "error": dict(error)}


def _checked_distribution_row(row: Any) -> dict[str, Any]:
    if not isinstance(row, dict) or set(row) != set(DISTRIBUTION_ROW_KEYS):
        raise InvalidOutcomeError(f"a distribution row must have exactly the keys {list(DISTRIBUTION_ROW_KEYS)}")
    for name, limit in _DISTRIBUTION_ROW_TEXT.items():
        value = row[name]
        if (value is not None or name != "message_at") and not (isinstance(value, str) and 0 < len(value) <= limit):
            raise InvalidOutcomeError(f"distribution row {name} must be a string of 1-{limit} characters")
    if row["status"] not in COUNT_KEYS:
        raise InvalidOutcomeError(f"distribution row status must be one of {list(COUNT_KEYS)}")
    for name in ("state", "source_version", "message_id"):
        value = row[name]
        if value is not None and not (_is_int(value) and 0 <= value <= _UINT32_MAX):
            raise InvalidOutcomeError(f"distribution row {name} must be a uint32 or null")
    return dict(row)


def _check_count(name: str, value: Any) -> None:
    if not (_is_int(value) and 0 <= value <= 10_000_000):
        raise InvalidOutcomeError(f"distribution {name} must be a count")


def _checked_extended_status(extended: Any) -> dict[str, Any] | None:
    if extended is None:
        return None
    if not isinstance(extended, dict) or set(extended) != set(EXTENDED_STATUS_FIELDS):
        raise InvalidOutcomeError(f"error.extended_status must have exactly the keys {list(EXTENDED_STATUS_FIELDS)}")
    if not isinstance(extended["class"], str) or not extended["class"]:
        raise InvalidOutcomeError("error.extended_status.class must be a non-empty string")
    for name in EXTENDED_STATUS_FIELDS[1:]:
        value = extended[name]
        expected_int = name in _EXTENDED_INT_FIELDS
        if value is not None and not (_is_int(value) if expected_int else isinstance(value, str)):
            kind = "an integer" if expected_int else "a string"
            raise InvalidOutcomeError(f"error.extended_status.{name} must be {kind} or null")
    return dict(extended)


def _copy_error(error: dict[str, Any] | None) -> dict[str, Any] | None:
    if error is None:
        return None
    copied = dict(error)
    extended = error["extended_status"]
    copied["extended_status"] = dict(extended) if extended is not None else None
    return copied


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_utc_ms(moment: datetime, name: str) -> datetime:
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidOutcomeError(f"{name} must be a timezone-aware datetime")
    utc = moment.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)
