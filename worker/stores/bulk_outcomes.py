"""The final outcome of a bulk job, published on the outcome stream when its last child ends.

One document per bulk (schema `sccm-refresh.bulk-outcome`, version 2), next to the request
outcomes on the same stream and channel; stream entries say which they hold in their `kind`
field (`request` or `bulk`). Readers of request outcomes skip bulk entries. Version 2 added
`until` and `distribution` (children by distribution state, a bulk followed to every DP only);
a version 1 document is still read (as `until: accepted`, `distribution: null`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from worker.domain.outcomes import InvalidOutcomeError, format_timestamp, parse_timestamp
from worker.domain.request import UNTIL_ACCEPTED
from worker.stores.bulk_store import BulkRecord

__all__ = ["BULK_OUTCOME_SCHEMA", "BULK_OUTCOME_VERSION", "BulkOutcome"]

BULK_OUTCOME_SCHEMA: Final = "sccm-refresh.bulk-outcome"
BULK_OUTCOME_VERSION: Final = 2
_READABLE_VERSIONS: Final = (1, BULK_OUTCOME_VERSION)
_FINAL_STATES: Final = frozenset({"done", "cancelled", "failed"})


@dataclass(frozen=True)
class BulkOutcome:
    """How a bulk job ended: its state, how many children it had, and how each ended."""

    bulk_id: str
    site_code: str
    state: str
    dry_run: bool
    total: int
    counts: dict[str, int] = field(default_factory=dict)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    until: str = UNTIL_ACCEPTED
    # until=distributed only: children by distribution state (`distributing` is 0 once it is over).
    distribution: dict[str, int] | None = None

    def __post_init__(self) -> None:
        if self.state not in _FINAL_STATES:
            raise InvalidOutcomeError(f"a bulk outcome ends done, cancelled or failed, not {self.state!r}")

    @classmethod
    def of(cls, record: BulkRecord) -> BulkOutcome:
        return cls(
            bulk_id=record.bulk_id,
            site_code=record.site_code,
            state=record.state,
            dry_run=record.dry_run,
            total=record.total or 0,
            counts=dict(sorted(record.counts.items())),
            started_at=record.started_at,
            finished_at=record.finished_at or datetime.now(UTC),
            error=record.error,
            until=record.until,
            distribution=record.distribution,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("started_at", "finished_at"):
            moment = data[name]
            data[name] = format_timestamp(moment) if moment is not None else None
        return {"schema": BULK_OUTCOME_SCHEMA, "version": BULK_OUTCOME_VERSION, "final": True, **data}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> BulkOutcome:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InvalidOutcomeError(f"bulk outcome is not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("schema") != BULK_OUTCOME_SCHEMA:
            raise InvalidOutcomeError("not a bulk outcome")
        if data.get("version") not in _READABLE_VERSIONS:
            raise InvalidOutcomeError(f"unsupported bulk outcome version {str(data.get('version'))[:20]!r}")
        fields = {k: v for k, v in data.items() if k not in ("schema", "version", "final")}
        for name in ("started_at", "finished_at"):
            if fields.get(name) is not None:
                fields[name] = parse_timestamp(fields[name])
        try:
            return cls(**fields)
        except TypeError as exc:
            raise InvalidOutcomeError(f"bulk outcome fields: {exc}") from None
