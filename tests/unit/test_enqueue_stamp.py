"""Stamping a validated request: which request id it gets, and its requested_at."""

from __future__ import annotations

from datetime import UTC, datetime

from producers.enqueue import prepare_refresh, stamp_refresh
from worker.domain.request import RefreshRequest, is_valid_id


def _validated(**extra: str) -> RefreshRequest:
    return RefreshRequest.model_validate({"site_code": "PS1", "package_id": "PS100001", **extra})


def test_a_request_keeps_its_own_id_over_the_default() -> None:
    stamped = stamp_refresh(_validated(request_id="mine-1"), default_id="req-derived")
    assert stamped.request_id == "mine-1"


def test_a_request_without_an_id_takes_the_default_else_a_fresh_one() -> None:
    assert stamp_refresh(_validated(), default_id="req-derived").request_id == "req-derived"
    fresh = {stamp_refresh(_validated()).request_id for _ in range(50)}
    assert len(fresh) == 50 and all(i is not None and i.startswith("req-") and is_valid_id(i) for i in fresh)


def test_requested_at_is_stamped_now_in_utc_unless_given() -> None:
    before = datetime.now(UTC)
    stamped = stamp_refresh(_validated())
    assert stamped.requested_at is not None and before <= stamped.requested_at <= datetime.now(UTC)
    given = stamp_refresh(_validated(requested_at="2024-05-01T12:00:00Z"))
    assert given.requested_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_prepare_is_validate_then_stamp() -> None:
    """The Celery producers' path and the API's (validated by the body model) give the same shape."""
    prepared = prepare_refresh(site_code="PS1", package_id="PS100001", request_id="same-1")
    stamped = stamp_refresh(_validated(request_id="same-1"))
    assert prepared.model_dump(exclude={"requested_at"}) == stamped.model_dump(exclude={"requested_at"})
