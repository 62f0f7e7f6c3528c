"""The refresh request contract: what a producer may put in the task's kwargs.

Strict at the edge: every field is validated before anything reaches a WS-Man selector or a
WQL string, unknown fields are refused (a typo must not silently change behaviour), JSON types
are taken as documented with no coercion (`force: "yes"` is an error, not true: it guards the one
refresh Microsoft warns can break a task sequence), and the error text names the field and the
rule, never echoing more than a short, escaped value.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from errors import InvalidRequestError
from worker.domain.follow import FollowState
from worker.domain.packages import (
    TASK_SEQUENCE_CLASS,
    PackageInfo,
    safe_repr,
    validate_package_id,
    validate_refreshable_class,
    validate_site_code,
)

__all__ = [
    "DEFAULT_PACKAGE_CLASS",
    "RETRY_STATE_KWARG",
    "UNTIL_ACCEPTED",
    "UNTIL_DISTRIBUTED",
    "UNTIL_SOURCE_UPDATED",
    "UNTIL_VALUES",
    "PackageHint",
    "RefreshRequest",
    "RetryState",
    "Until",
    "check_redistribute_until",
    "check_verify_until",
    "is_valid_id",
    "parse_request",
]

DEFAULT_PACKAGE_CLASS = "SMS_DriverPackage"
# How far a request is followed before its final outcome (docs/outcomes.md, "until").
Until = Literal["accepted", "source_updated", "distributed"]
UNTIL_VALUES: tuple[Until, ...] = get_args(Until)
UNTIL_ACCEPTED: Until = "accepted"
UNTIL_SOURCE_UPDATED: Until = "source_updated"
UNTIL_DISTRIBUTED: Until = "distributed"
# Internal kwarg carried across re-queues; producers never set it.
RETRY_STATE_KWARG = "retry_state"
# fullmatch only: "$" would also accept a trailing newline.
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# One rejection names at most this many problems: a message with 100,000 unknown keys gets a
# short answer, not a megabyte of error text.
_MAX_PROBLEMS = 8
_REQUESTED_AT_MIN = datetime(2000, 1, 1, tzinfo=UTC)
_REQUESTED_AT_MAX = datetime(2100, 1, 1, tzinfo=UTC)
# Plausibility bounds of a retry state read from a message (a producer could forge one).
_MAX_COUNT = 100_000
_MAX_STATE_AGE_S = 30 * 24 * 3600
_CLOCK_SKEW_S = 60.0
_MAX_NAME_CHARS = 256
_UINT32_MAX = 2**32 - 1
_MAX_FOLLOW_TARGETS = 10_000  # FollowSettings.max_targets' ceiling


class PackageHint(BaseModel):
    """What a producer already knows of the package (a bulk child: from the enumeration).

    With it, a first attempt needs no Get: RefreshPkgSource is invoked straight away (one WS-Man
    operation instead of two), and the hint stands in for the Get's answer (the invoke fence,
    the class of a non-zero ReturnValue, the name and SourceVersion in outcomes). A redelivery or
    retry still reads the package. A forged hint can only change how a failure is classified.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str | None = Field(default=None, max_length=_MAX_NAME_CHARS)
    pkg_source_flag: int | None = Field(default=None, ge=0, le=4)
    source_version: int | None = Field(default=None, ge=0, le=_UINT32_MAX)
    last_refresh_time: str | None = Field(default=None, max_length=64)
    action_in_progress: int | None = Field(default=None, ge=0, le=_UINT32_MAX)

    def package(self, package_class: str, package_id: str) -> PackageInfo:
        return PackageInfo(
            class_name=package_class,
            package_id=package_id,
            name=self.name,
            pkg_source_flag=self.pkg_source_flag,
            source_version=self.source_version,
            last_refresh_time=self.last_refresh_time,
            action_in_progress=self.action_in_progress,
        )

    @classmethod
    def of(cls, package: PackageInfo) -> PackageHint:
        return cls(
            name=package.name,
            pkg_source_flag=package.pkg_source_flag,
            source_version=package.source_version,
            last_refresh_time=package.last_refresh_time,
            action_in_progress=package.action_in_progress,
        )


class RefreshRequest(BaseModel):
    """One "refresh package X at site S" request, as producers send it (JSON kwargs)."""

    # strict: JSON types as documented; a string is not a boolean, a number is not a string.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    site_code: str
    package_id: str
    package_class: str = DEFAULT_PACKAGE_CLASS
    request_id: str | None = Field(default=None, description="idempotency key; defaults to the task id")
    correlation_id: str | None = None
    force: bool = Field(default=False, description="allow SMS_TaskSequencePackage (Microsoft warns against it)")
    verify: bool = Field(default=False, description="the older spelling of until=source_updated")
    until: Until | None = Field(
        default=None,
        description=(
            "accepted (default): the provider took the call; source_updated: SourceVersion rose; "
            "distributed: every targeted DP holds the new version"
        ),
    )
    # Left out of a message when false (exclude_if): a worker that predates it would refuse the field.
    redistribute_failed: bool = Field(
        default=False,
        exclude_if=lambda value: value is False,
        description=(
            "with until=distributed: a target DP failed, or retrying for hours, gets RefreshNow "
            "(the console's Redistribute), at most once per package and DP per window"
        ),
    )
    requested_at: datetime | None = Field(
        default=None, description="when the producer asked (ISO-8601 with a zone); defaults to the first attempt"
    )
    package_hint: PackageHint | None = Field(
        default=None, description="the package's properties as the producer read them (bulk children)"
    )

    @field_validator("site_code")
    @classmethod
    def _site(cls, value: str) -> str:
        return _as_value_error(validate_site_code, value)

    @field_validator("package_id")
    @classmethod
    def _package(cls, value: str) -> str:
        return _as_value_error(validate_package_id, value)

    @field_validator("package_class")
    @classmethod
    def _class(cls, value: str) -> str:
        return _as_value_error(validate_refreshable_class, value)

    @field_validator("request_id", "correlation_id")
    @classmethod
    def _ids(cls, value: str | None) -> str | None:
        if value is not None and not is_valid_id(value):
            raise ValueError("must be 1-128 letters, digits or _ . : - (starting with a letter or digit)")
        return value

    @field_validator("requested_at", mode="before")
    @classmethod
    def _iso_text(cls, value: object) -> object:
        # JSON carries times as text: an ISO-8601 string, never a number of seconds.
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value)
            except ValueError:
                raise ValueError("must be an ISO-8601 time with a zone, e.g. 2026-11-23T10:00:00Z") from None
        return value

    @field_validator("requested_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("must carry a time zone, e.g. 2026-11-23T10:00:00Z")
        if not _REQUESTED_AT_MIN <= value <= _REQUESTED_AT_MAX:
            raise ValueError("must be between the years 2000 and 2100")
        return value

    @model_validator(mode="after")
    def _verify_agrees_with_until(self) -> RefreshRequest:
        check_verify_until(verify=self.verify, until=self.until)
        check_redistribute_until(redistribute_failed=self.redistribute_failed, until=self.until)
        return self

    @property
    def follow_until(self) -> Until:
        """How far this request is followed: `until`, else `verify`'s meaning (source_updated), else accepted."""
        if self.until is not None:
            return self.until
        return UNTIL_SOURCE_UPDATED if self.verify else UNTIL_ACCEPTED

    @property
    def is_task_sequence(self) -> bool:
        return self.package_class == TASK_SEQUENCE_CLASS


def check_verify_until(*, verify: bool, until: Until | None) -> None:
    """verify=true is the older spelling of until=source_updated: with until=accepted a request says two things."""
    if verify and until == UNTIL_ACCEPTED:
        raise ValueError("verify=true means until=source_updated: it contradicts until=accepted")


def check_redistribute_until(*, redistribute_failed: bool, until: Until | None) -> None:
    """Redistribution happens while following to every DP: asked with another `until` it would do nothing."""
    if redistribute_failed and until != UNTIL_DISTRIBUTED:
        raise ValueError("redistribute_failed=true needs until=distributed")


def _as_value_error(normalize: Any, value: str) -> str:
    try:
        result: str = normalize(value)
    except InvalidRequestError as exc:
        raise ValueError(exc.message) from None
    return result


def is_valid_id(value: object) -> bool:
    """True for a request or correlation id: 1-128 of `A-Z a-z 0-9 _ . : -`, starting alphanumeric."""
    return isinstance(value, str) and _ID_PATTERN.fullmatch(value) is not None


def parse_request(kwargs: dict[str, Any]) -> RefreshRequest:
    """Validate task kwargs; every problem is reported at once, as one InvalidRequestError."""
    try:
        return RefreshRequest.model_validate(kwargs)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        problems = [f"{_location(err['loc'])}: {_short_msg(err)}" for err in errors[:_MAX_PROBLEMS]]
        if len(errors) > _MAX_PROBLEMS:
            problems.append(f"and {len(errors) - _MAX_PROBLEMS} more")
        raise InvalidRequestError(f"invalid refresh request: {'; '.join(problems)}") from None


def _location(loc: tuple[int | str, ...]) -> str:
    # An unknown key is the producer's text: named as is only when it looks like a field name.
    parts = [p if isinstance(p, str) and _FIELD_NAME.fullmatch(p) else safe_repr(p) for p in loc]
    return ".".join(str(p) for p in parts) or "request"


def _short_msg(err: Any) -> str:
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return "unknown field"
    return msg


@dataclass(frozen=True)
class RetryState:
    """What survives between attempts of one request (carried in the re-queued message).

    Counters are per policy: a medium wait does not eat the transient budget and vice versa.
    `not_before` lets one long wait be split into several countdowns below the visibility
    timeout: a run woken early re-queues itself without calling the provider.
    """

    attempts: int = 0
    transient_retries: int = 0
    medium_retries: int = 0
    first_attempt_at: float | None = None
    transient_since: float | None = None
    medium_since: float | None = None
    not_before: float | None = None
    source_version_before: int | None = None
    package_name: str | None = None
    requested_at: float | None = None
    # When the request last parked in its site's line for a provider slot: the delivery that
    # carries this was woken by a release and may hold a slot it must give back if it ends early.
    parked_at: float | None = None
    # Set once a request with until=distributed was accepted: it is being followed to every DP.
    follow: FollowState | None = None

    def to_kwargs(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_kwargs(cls, raw: object, *, now: float | None = None, max_wait_s: float = 86_400.0) -> RetryState:
        """Rebuild from a message; anything malformed or implausible starts afresh.

        The state normally comes from our own re-queue, but it travels in kwargs a producer
        could also send: a forged `not_before` far in the future (or NaN) must not park or drop
        the request, so every number is bounded against `now` and the longest policy wait.
        """
        now = time.time() if now is None else now
        fresh = cls()
        if not isinstance(raw, dict):
            return fresh
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        try:
            state = _RETRY_STATE_ADAPTER.validate_python(known)
        except ValidationError:
            return fresh
        return state if state._plausible(now, max_wait_s) else fresh

    def _plausible(self, now: float, max_wait_s: float) -> bool:
        counts = (self.attempts, self.transient_retries, self.medium_retries)
        if not all(0 <= n <= _MAX_COUNT for n in counts):
            return False
        past = (self.first_attempt_at, self.transient_since, self.medium_since, self.requested_at, self.parked_at)
        for moment in past:
            if moment is not None and not (
                math.isfinite(moment) and now - _MAX_STATE_AGE_S <= moment <= now + _CLOCK_SKEW_S
            ):
                return False
        if self.not_before is not None and not (
            math.isfinite(self.not_before) and self.not_before <= now + max_wait_s + _CLOCK_SKEW_S
        ):
            return False
        if self.source_version_before is not None and not 0 <= self.source_version_before <= _UINT32_MAX:
            return False
        if self.follow is not None and not self.follow.plausible(now, _MAX_STATE_AGE_S, _MAX_FOLLOW_TARGETS):
            return False
        return self.package_name is None or len(self.package_name) <= _MAX_NAME_CHARS

    def evolve(self, **changes: Any) -> RetryState:
        return replace(self, **changes)


_RETRY_STATE_ADAPTER = TypeAdapter(RetryState)
