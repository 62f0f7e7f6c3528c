"""Request and response bodies of the HTTP API (every response is declared, errors included).

A refresh item is the API's own model, `RefreshItem`: the task's fields a caller may set, with
the worker's rules (strict, unknown fields refused, an unforced task sequence refused), and none
of its internal ones (`package_hint`, `requested_at`, `retry_state`: the worker would trust a
forged hint). `to_request` turns it into the task's `RefreshRequest`. A bulk job is
`worker.domain.criteria.BulkCriteria` plus `dry_run`. So the API cannot accept what the worker would
refuse, nor let a caller set what only producers inside the system may.

A body object with far more keys than its model has fields is refused with one error before
each key is looked at (100,000 unknown keys would otherwise be 100,000 errors built).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from errors import InvalidRequestError
from worker.domain.criteria import BulkCriteria
from worker.domain.outcomes import STATUSES
from worker.domain.packages import (
    TASK_SEQUENCE_CLASS,
    validate_package_id,
    validate_refreshable_class,
    validate_site_code,
)
from worker.domain.request import (
    DEFAULT_PACKAGE_CLASS,
    RefreshRequest,
    Until,
    check_redistribute_until,
    check_verify_until,
    is_valid_id,
)

__all__ = [
    "LOCAL_ID_MAX_CHARS",
    "MAX_PACKAGES_CEILING",
    "BulkAccepted",
    "BulkRefreshBody",
    "BulkStatus",
    "DistributionBlock",
    "DistributionCounts",
    "DistributionRow",
    "FieldError",
    "Health",
    "OutcomeDocument",
    "PackageStatus",
    "Problem",
    "Readiness",
    "RefreshAccepted",
    "RefreshBatch",
    "RefreshDistribution",
    "RefreshItem",
    "RefreshStatus",
    "SubmittedRefresh",
    "ValidationProblem",
    "rule",
    "to_request",
]

# The model's own bound; the configured limit (api.max_packages_per_request, at most this) is
# checked by the route and published in the OpenAPI document.
MAX_PACKAGES_CEILING: Final = 10_000
_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)
_TIMESTAMP_PATTERN: Final = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"


# A caller's request id is stored as `<token name>:<id>` (names are at most 64 characters):
# at most 63 here keeps the stored id within the worker's 128.
LOCAL_ID_MAX_CHARS: Final = 63
# Keys a body object may have before it is refused whole (its model has fewer fields).
_MAX_KEYS: Final = 32
_LAST_BMP: Final = 0xFFFF
_ID_RULE: Final = f"must be 1-{LOCAL_ID_MAX_CHARS} letters, digits or _ . : - (starting with a letter or digit)"


def _few_keys(data: Any) -> Any:
    if isinstance(data, dict) and len(data) > _MAX_KEYS:
        raise ValueError(f"more than {_MAX_KEYS} fields")
    return data


def rule(normalise: Callable[[Any], str]) -> AfterValidator:
    """A producer-side validator (InvalidRequestError) as a pydantic one (ValueError); None passes."""

    def check(value: Any) -> Any:
        if value is None:
            return None
        try:
            return normalise(value)
        except InvalidRequestError as exc:
            raise ValueError(exc.message) from None

    return AfterValidator(check)


def _local_id(value: str | None) -> str | None:
    if value is not None and not (len(value) <= LOCAL_ID_MAX_CHARS and is_valid_id(value)):
        raise ValueError(_ID_RULE)
    return value


def _correlation_id(value: str | None) -> str | None:
    if value is not None and not is_valid_id(value):
        raise ValueError("must be 1-128 letters, digits or _ . : - (starting with a letter or digit)")
    return value


class RefreshItem(BaseModel):
    """One package to refresh: what a caller may set of the task's request (docs/api.md)."""

    model_config = _STRICT

    site_code: Annotated[str, rule(validate_site_code)]
    package_id: Annotated[str, rule(validate_package_id)]
    package_class: Annotated[str, rule(validate_refreshable_class)] = DEFAULT_PACKAGE_CLASS
    request_id: Annotated[str | None, AfterValidator(_local_id)] = Field(
        default=None,
        description=(
            "your id for the request, scoped to your token: stored as `<token name>:<request_id>` "
            "(the id the answer and the outcomes carry); default: a new one"
        ),
    )
    correlation_id: Annotated[str | None, AfterValidator(_correlation_id)] = None
    force: bool = Field(
        default=False,
        validate_default=True,
        description="required for SMS_TaskSequencePackage (Microsoft warns it renders the task sequence inoperable)",
    )
    verify: bool = Field(default=False, description="the older spelling of until=source_updated")
    until: Until | None = Field(default=None, description=RefreshRequest.model_fields["until"].description)
    redistribute_failed: bool = Field(
        default=False, description=RefreshRequest.model_fields["redistribute_failed"].description
    )

    _few_keys = model_validator(mode="before")(_few_keys)

    @model_validator(mode="after")
    def _verify_agrees_with_until(self) -> RefreshItem:
        check_verify_until(verify=self.verify, until=self.until)
        check_redistribute_until(redistribute_failed=self.redistribute_failed, until=self.until)
        return self

    @field_validator("force")
    @classmethod
    def _task_sequence_needs_force(cls, value: bool, info: ValidationInfo) -> bool:
        if info.data.get("package_class") == TASK_SEQUENCE_CLASS and not value:
            raise ValueError(f"must be true to refresh {TASK_SEQUENCE_CLASS}")
        return value


def to_request(item: RefreshItem, *, request_id: str, requested_at: datetime) -> RefreshRequest:
    """The task's request for a validated item (its rules are the item's: not validated again)."""
    return RefreshRequest.model_construct(
        site_code=item.site_code,
        package_id=item.package_id,
        package_class=item.package_class,
        request_id=request_id,
        correlation_id=item.correlation_id,
        force=item.force,
        verify=item.verify,
        until=item.until,
        redistribute_failed=item.redistribute_failed,
        requested_at=requested_at,
        package_hint=None,
    )


class RefreshBatch(BaseModel):
    """`POST /v1/refreshes`: one or many packages."""

    model_config = _STRICT

    packages: list[RefreshItem] = Field(min_length=1, max_length=MAX_PACKAGES_CEILING)

    _few_keys = model_validator(mode="before")(_few_keys)


class BulkRefreshBody(BulkCriteria):
    """`POST /v1/bulk-refreshes`: the bulk criteria, plus `dry_run` (count and sample, refresh nothing)."""

    dry_run: bool = Field(default=False, description="enumerate and count only; nothing is refreshed")
    until: Until = Field(
        default="accepted",
        description="how far every child is followed, as a single request's `until`: "
        + str(RefreshRequest.model_fields["until"].description),
    )

    _few_keys = model_validator(mode="before")(_few_keys)

    @field_validator("pkg_source_flags", mode="before")
    @classmethod
    def _integral_numbers(cls, value: Any) -> Any:
        # JSON Schema counts 4.0 as an integer (the document says `integer`): take it as 4.
        if isinstance(value, list):
            return [int(item) if isinstance(item, float) and item.is_integer() else item for item in value]
        return value

    @field_validator("name_pattern")
    @classmethod
    def _basic_plane(cls, value: str | None) -> str | None:
        # Package names live in the Basic Multilingual Plane; the document's pattern says so exactly.
        if value is not None and any(ord(ch) > _LAST_BMP for ch in value):
            raise ValueError("characters past U+FFFF are not allowed in a name pattern")
        return value

    def criteria(self) -> dict[str, Any]:
        """The criteria alone, as `producers.bulk.enqueue_bulk` takes them."""
        return self.model_dump(mode="json", exclude={"dry_run", "until"}, exclude_none=True)


# -- responses -------------------------------------------------------------------------------


class SubmittedRefresh(BaseModel):
    request_id: str
    site_code: str
    package_id: str
    package_class: str
    joins: str | None = Field(
        description=(
            "the request id of a pending, not yet accepted refresh of the same package when this "
            "request was submitted (the worker will most likely coalesce it into that one); advisory"
        )
    )


class RefreshAccepted(BaseModel):
    refreshes: list[SubmittedRefresh]


_UINT32_MAX: Final = 0xFFFFFFFF
RowStatus = Literal["done", "waiting", "retrying", "failed", "unknown", "removed"]


class DistributionRow(BaseModel):
    """One target DP's row (docs/outcomes.md, "The distribution block")."""

    model_config = ConfigDict(extra="forbid")

    dp: str = Field(min_length=1, max_length=255, description="the DP's server name, from its NAL path")
    nal_path: str = Field(min_length=1, max_length=512)
    status: RowStatus
    state: int | None = Field(ge=0, le=_UINT32_MAX, description="SMS_PackageStatusDistPointsSummarizer.State as read")
    source_version: int | None = Field(ge=0, le=_UINT32_MAX, description="the version on that DP")
    message_id: int | None = Field(ge=0, le=_UINT32_MAX, description="its last status message, when read")
    message_at: str | None = Field(max_length=64)


class DistributionCounts(BaseModel):
    """Target DPs by row status."""

    model_config = ConfigDict(extra="forbid")

    done: int = Field(ge=0)
    waiting: int = Field(ge=0)
    retrying: int = Field(ge=0)
    failed: int = Field(ge=0)
    unknown: int = Field(ge=0)
    removed: int = Field(ge=0)


class RedistributionError(BaseModel):
    """The provider's refusal of a RefreshNow (an error kind and its message)."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(max_length=2000)
    message: str = Field(max_length=2000)


class Redistribution(BaseModel):
    """RefreshNow sent to one target DP (opt-in redistribution; docs/outcomes.md, "Redistribution")."""

    model_config = ConfigDict(extra="forbid")

    dp: str = Field(min_length=1, max_length=255)
    nal_path: str = Field(min_length=1, max_length=512)
    at: str = Field(pattern=_TIMESTAMP_PATTERN)
    error: RedistributionError | None = Field(description="null: the Put landed; else the provider's refusal")


class DistributionBlock(BaseModel):
    """What following a refresh to every DP found (an outcome's `distribution`, schema version 3)."""

    model_config = ConfigDict(extra="forbid")

    phase: Literal["source", "dps"] = Field(
        description="source: waiting for SourceVersion to pass V0; dps: following the DP rows at V1"
    )
    targets: int | None = Field(ge=0, description="DPs followed; null until read")
    counts: DistributionCounts
    dps: list[DistributionRow] = Field(description="at most FOLLOW__MAX_DP_ROWS target rows, stragglers first")
    dps_omitted: int = Field(ge=0, description="target rows not listed")
    following_since: str = Field(pattern=_TIMESTAMP_PATTERN)
    deadline_at: str = Field(pattern=_TIMESTAMP_PATTERN)
    next_poll_at: str | None = Field(pattern=_TIMESTAMP_PATTERN, description="null once final")
    polls: int = Field(ge=0)
    redistributed: list[Redistribution] = Field(
        default_factory=list,
        max_length=10_000,
        description=(
            "only present for a request that redistributes (redistribute_failed, its own or its site's): "
            "the DPs it sent RefreshNow, the latest per DP"
        ),
    )


class OutcomeDocument(BaseModel):
    """One outcome event, schema `sccm-refresh.outcome` version 3 (docs/outcomes.md, docs/outcome.schema.json)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: Literal["sccm-refresh.outcome"] = Field(alias="schema")
    version: Literal[3]
    request_id: str
    correlation_id: str | None
    joined_request_id: str | None
    task_id: str | None
    site_code: str
    package_class: str
    package_id: str
    package_name: str | None
    status: Literal[STATUSES]  # type: ignore[valid-type]  # a Literal built from the schema's tuple
    final: bool
    return_value: int | None
    error: dict[str, Any] | None
    attempt: int = Field(ge=1)
    attempts: int = Field(ge=1)
    next_retry_at: str | None = Field(pattern=_TIMESTAMP_PATTERN)
    source_version_before: int | None
    source_version_after: int | None
    distribution: DistributionBlock | None = Field(
        description="only for a request followed to every DP (until=distributed): what the DPs hold"
    )
    requested_at: str = Field(pattern=_TIMESTAMP_PATTERN)
    started_at: str = Field(pattern=_TIMESTAMP_PATTERN)
    finished_at: str = Field(pattern=_TIMESTAMP_PATTERN)
    duration_ms: float = Field(ge=0)
    worker: str


class RefreshStatus(BaseModel):
    """The latest recorded event of one request."""

    request_id: str
    status: str
    final: bool
    attempt: int
    updated_at: str = Field(pattern=_TIMESTAMP_PATTERN)
    stream_id: str = Field(description="the event's id in the outcome stream (resume /v1/events after it)")
    outcome: OutcomeDocument


class RefreshDistribution(BaseModel):
    """How far a request followed to every DP got: its latest event's distribution block."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    status: str = Field(description="the latest event's status (distributing, or one of its finals)")
    final: bool
    updated_at: str = Field(pattern=_TIMESTAMP_PATTERN)
    stream_id: str = Field(description="the event's id in the outcome stream")
    source_version_before: int | None = Field(description="V0: SourceVersion when the refresh was accepted")
    source_version_after: int | None = Field(description="V1: the version the DPs must hold; null until it rose")
    distribution: DistributionBlock | None = Field(
        description=(
            "null while the request has not reached following yet (not accepted so far: whether it is"
            " followed shows once it is); a request that ended without one answers 409"
        )
    )


class PackageStatus(BaseModel):
    """The latest state of one package (the newest request wins; see docs/outcomes.md)."""

    site_code: str
    package_id: str
    status: str
    request_id: str
    final: bool
    updated_at: str = Field(pattern=_TIMESTAMP_PATTERN)
    source_version: int | None
    outcome: OutcomeDocument


_CLASSES_SELECTED: Final = "the package classes the bulk enumerates (the default set when none was named)"


class BulkAccepted(BaseModel):
    bulk_id: str
    dry_run: bool
    package_classes: list[str] = Field(description=_CLASSES_SELECTED)
    until: Until = Field(description="how far every child is followed")


class BulkDistribution(BaseModel):
    """A bulk followed to every DP: its children by distribution state."""

    distributing: int = Field(description="accepted, still followed (out of the window)")
    distributed: int
    distributed_with_failures: int
    distribution_timed_out: int


class BulkStatus(BaseModel):
    """A bulk job: state, counts by final status, and (dry run) the packages a run would refresh."""

    bulk_id: str
    site_code: str
    state: Literal["enumerating", "running", "done", "cancelled", "failed"]
    dry_run: bool
    package_classes: list[str] = Field(description=_CLASSES_SELECTED)
    enumeration_done: bool
    total: int | None = Field(description="children selected; null until enumeration ends")
    enqueued: int
    pending: int
    outstanding: int
    finished: int
    counts: dict[str, int] = Field(description="finished children by final status")
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    sample: list[dict[str, Any]] | None = Field(default=None, description="dry run: the first packages selected")
    until: Until = Field(description="how far every child is followed")
    distribution: BulkDistribution | None = Field(
        default=None, description="until=distributed only: children by distribution state"
    )


class DpStragglerRow(BaseModel):
    dp: str = Field(description="the DP's server name (from its NAL path, upper-cased)")
    held: int = Field(description="the bulk's packages this DP does not hold at V1 yet")
    waiting: int = Field(description="of those: in flight (queued, copying, validating, waiting for a schedule)")
    retrying: int
    failed: int
    unknown: int


class BulkStragglers(BaseModel):
    """Which DPs hold a bulk's packages back: each child's latest distribution block, rolled up."""

    bulk_id: str
    state: Literal["enumerating", "running", "done", "cancelled", "failed"]
    until: Until
    following: int = Field(description="children still followed (their rows count where they are now)")
    dps: list[DpStragglerRow] = Field(description="the DPs holding the most packages back, first")
    dps_omitted: int = Field(description="DPs holding packages back that are not listed (raise `limit`)")
    held_at_source: int = Field(description="packages whose SourceVersion never passed V0 (no DP to name)")
    unlisted_rows: int = Field(
        description="straggler rows the children's blocks did not list (each lists at most FOLLOW__MAX_DP_ROWS)"
    )


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    redis: bool
    broker: bool
    workers: int = Field(description="workers consuming our queue at the last check")
    checked_at: datetime = Field(description="when the workers were last asked (cached a few seconds)")
    token_file_ok: bool = Field(
        description=(
            "false while the token file's current version is bad (the server log says why; "
            "only tokens its good lines still hold are accepted)"
        )
    )
    reasons: list[str] = Field(
        default_factory=list, description="why not ready, one line each (e.g. Redis full); empty when ready"
    )


# -- errors ----------------------------------------------------------------------------------


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: body/path/query/header, then the field path")
    msg: str = Field(description="the rule broken; never the value sent")
    type: str


class ValidationProblem(BaseModel):
    """422: every field that broke its rule (the values sent are not echoed)."""

    detail: list[FieldError]


class Problem(BaseModel):
    """Any other error; `error_id` marks a 500 in the server log."""

    detail: str
    error_id: str | None = None
