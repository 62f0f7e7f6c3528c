"""The task's kwargs contract: strict validation with clear, injection-proof errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from errors import InvalidRequestError
from worker.domain.request import RetryState, parse_request


def test_valid_request_is_normalised_to_canonical_spelling() -> None:
    """Site code and PackageID are upper-cased, the class gets its canonical spelling."""
    request = parse_request({"site_code": "ps1", "package_id": "ps10001a", "package_class": "sms_package"})
    assert (request.site_code, request.package_id, request.package_class) == ("PS1", "PS10001A", "SMS_Package")
    assert request.force is False and request.verify is False


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"site_code": "PS", "package_id": "PS100001"}, "site_code"),
        ({"site_code": "PS1", "package_id": "PS1000G1"}, "package_id"),
        ({"site_code": "PS1", "package_id": "PS100001' OR '1'='1"}, "package_id"),
        ({"site_code": "PS1", "package_id": "PS100001", "package_class": "Win32_Process"}, "package_class"),
        ({"site_code": "PS1", "package_id": "PS100001", "colour": "red"}, "colour: unknown field"),
        ({"package_id": "PS100001"}, "site_code"),
        ({"site_code": "PS1", "package_id": "PS100001", "request_id": "a b"}, "request_id"),
    ],
)
def test_bad_request_names_the_field(kwargs: dict[str, object], fragment: str) -> None:
    """Every invalid field is reported by name in one InvalidRequestError."""
    with pytest.raises(InvalidRequestError) as info:
        parse_request(kwargs)
    assert fragment in info.value.message


@given(st.text(max_size=200))
def test_no_string_but_a_valid_package_id_passes(package_id: str) -> None:
    """Whatever text a producer sends, only SITE + 5 hex digits reaches a selector."""
    try:
        request = parse_request({"site_code": "PS1", "package_id": package_id})
    except InvalidRequestError as exc:
        assert len(exc.message) < 600
    else:
        assert len(request.package_id) == 8
        assert request.package_id.isalnum() and request.package_id.isascii()


NOW = 1_800_000_000.0


def test_retry_state_survives_a_round_trip_and_tolerates_junk() -> None:
    """The state carried across re-queues round-trips; junk starts afresh instead of failing."""
    state = RetryState(
        attempts=2, medium_retries=1, first_attempt_at=NOW - 90, medium_since=NOW - 60, source_version_before=3
    )
    assert RetryState.from_kwargs(state.to_kwargs(), now=NOW) == state
    assert RetryState.from_kwargs("junk", now=NOW) == RetryState()
    assert RetryState.from_kwargs({"attempts": "x", "bogus": 1}, now=NOW) == RetryState()


@pytest.mark.parametrize(
    "forged",
    [
        {"not_before": 1e12},  # would park the request for ever, one countdown at a time
        {"not_before": float("nan")},  # would make Celery drop the re-queue
        {"not_before": float("inf")},
        {"attempts": -5},
        {"medium_since": NOW + 3600},  # a wait that starts in the future never ends
        {"first_attempt_at": 0.0},
        {"source_version_before": 2**40},
    ],
)
def test_implausible_retry_state_from_a_producer_is_discarded(forged: dict[str, object]) -> None:
    """A retry_state a producer forged cannot park, drop or skew a request: it starts afresh."""
    assert RetryState.from_kwargs(forged, now=NOW, max_wait_s=900) == RetryState()


def test_requested_at_must_be_a_plausible_aware_time() -> None:
    """requested_at needs a zone and a year between 2000 and 2100 (outcomes are built from it)."""
    base = {"site_code": "PS1", "package_id": "PS100001"}
    for bad in ("2026-11-23T10:00:00", "0001-01-01T00:00:00+01:00", "9999-01-01T00:00:00Z"):
        with pytest.raises(InvalidRequestError, match="requested_at"):
            parse_request({**base, "requested_at": bad})
    assert parse_request({**base, "requested_at": "2026-11-23T10:00:00Z"}).requested_at is not None
