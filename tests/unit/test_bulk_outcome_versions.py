"""The bulk outcome document: version 2 carries `until` and `distribution`; version 1 is still read."""

from __future__ import annotations

import json

import pytest

from worker.domain.outcomes import InvalidOutcomeError
from worker.stores.bulk_outcomes import BULK_OUTCOME_SCHEMA, BulkOutcome

BULK = "bulk-" + "3" * 32
DISTRIBUTION = {"distributing": 0, "distributed": 7, "distributed_with_failures": 2, "distribution_timed_out": 1}


def test_a_followed_bulk_round_trips_with_its_distribution_counts() -> None:
    outcome = BulkOutcome(
        bulk_id=BULK,
        site_code="PS1",
        state="done",
        dry_run=False,
        total=10,
        counts={"distributed": 7, "distributed_with_failures": 2, "distribution_timed_out": 1},
        until="distributed",
        distribution=DISTRIBUTION,
    )
    document = json.loads(outcome.to_json())
    assert (document["version"], document["until"], document["distribution"]) == (2, "distributed", DISTRIBUTION)
    assert BulkOutcome.from_json(outcome.to_json()) == outcome


def test_a_version_1_document_reads_as_not_followed() -> None:
    v1 = {"schema": BULK_OUTCOME_SCHEMA, "version": 1, "final": True, "bulk_id": BULK, "site_code": "PS1"}
    v1 |= {"state": "done", "dry_run": False, "total": 1, "counts": {"accepted": 1}}
    outcome = BulkOutcome.from_json(json.dumps(v1))
    assert (outcome.until, outcome.distribution) == ("accepted", None)


def test_an_unknown_version_is_refused() -> None:
    future = {"schema": BULK_OUTCOME_SCHEMA, "version": 3, "bulk_id": BULK}
    with pytest.raises(InvalidOutcomeError, match="unsupported bulk outcome version"):
        BulkOutcome.from_json(json.dumps(future))
