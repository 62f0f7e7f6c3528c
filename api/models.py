"""Request and response bodies of the HTTP API (every response is declared, errors included).

Request items are the producers' own models: a refresh is `worker.domain.request.RefreshRequest`
(strict, unknown fields refused) and a bulk job is `worker.domain.criteria.BulkCriteria` plus
`dry_run`, so the API cannot accept what a producer or the worker would refuse.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.domain.criteria import BulkCriteria
from worker.domain.outcomes import STATUSES
from worker.domain.request import RefreshRequest

__all__ = [
    "MAX_PACKAGES_CEILING",
    "BulkAccepted",
    "BulkRefreshBody",
    "BulkStatus",
    "FieldError",
    "Health",
    "OutcomeDocument",
    "PackageStatus",
    "Problem",
    "Readiness",
    "RefreshAccepted",
    "RefreshBatch",
    "RefreshStatus",
    "SubmittedRefresh",
    "ValidationProblem",
]

# The model's own bound; the configured limit (api.max_packages_per_request, at most this) is
# checked by the route and published in the OpenAPI document.
MAX_PACKAGES_CEILING: Final = 10_000
_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)
_TIMESTAMP_PATTERN: Final = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"


class RefreshBatch(BaseModel):
    """`POST /v1/refreshes`: one or many packages, each a refresh request as the worker takes it."""

    model_config = _STRICT

    packages: list[RefreshRequest] = Field(min_length=1, max_length=MAX_PACKAGES_CEILING)


class BulkRefreshBody(BulkCriteria):
    """`POST /v1/bulk-refreshes`: the bulk criteria, plus `dry_run` (count and sample, refresh nothing)."""

    dry_run: bool = Field(default=False, description="enumerate and count only; nothing is refreshed")

    def criteria(self) -> dict[str, Any]:
        """The criteria alone, as `producers.bulk.enqueue_bulk` takes them."""
        return self.model_dump(mode="json", exclude={"dry_run"}, exclude_none=True)


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


class OutcomeDocument(BaseModel):
    """One outcome event, schema `sccm-refresh.outcome` version 2 (docs/outcomes.md, docs/outcome.schema.json)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: Literal["sccm-refresh.outcome"] = Field(alias="schema")
    version: Literal[2]
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


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    redis: bool
    broker: bool
    workers: int = Field(description="workers consuming our queue at the last check")
    checked_at: datetime = Field(description="when the workers were last asked (cached a few seconds)")


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
