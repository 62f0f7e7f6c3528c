"""The `until` field: how far a request is followed, validated the same at every edge that builds one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from api.models import RefreshBatch, RefreshItem, to_request
from cli.main import UNTIL_CHOICES
from errors import InvalidRequestError
from worker.domain.request import UNTIL_VALUES, parse_request

BASE: dict[str, Any] = {"site_code": "PS1", "package_id": "PS100001"}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, "accepted"),
        ({"verify": True}, "source_updated"),
        ({"until": "accepted"}, "accepted"),
        ({"until": "source_updated"}, "source_updated"),
        ({"until": "distributed"}, "distributed"),
        ({"verify": True, "until": "source_updated"}, "source_updated"),
        ({"verify": True, "until": "distributed"}, "distributed"),
    ],
)
def test_until_defaults_to_accepted_and_verify_is_its_older_spelling(extra: dict[str, Any], expected: str) -> None:
    """Old producers keep their meaning: no field is `accepted`, verify=true is `source_updated`."""
    assert parse_request({**BASE, **extra}).follow_until == expected


@pytest.mark.parametrize(
    ("until", "fragment"),
    [
        ("bogus", "until: Input should be 'accepted', 'source_updated' or 'distributed'"),
        ("DISTRIBUTED", "until: Input should be"),
        (1, "until: Input should be"),
        (True, "until: Input should be"),
        (["distributed"], "until: Input should be"),
    ],
)
def test_a_bad_until_is_refused_by_name(until: object, fragment: str) -> None:
    """Only the three spellings pass, case included; the error names the field, not a traceback."""
    with pytest.raises(InvalidRequestError) as info:
        parse_request({**BASE, "until": until})
    assert fragment in info.value.message


def test_verify_contradicting_until_is_refused() -> None:
    """verify=true asks for at least source_updated: with until=accepted the request says two things."""
    with pytest.raises(InvalidRequestError) as info:
        parse_request({**BASE, "verify": True, "until": "accepted"})
    assert "contradicts until=accepted" in info.value.message


def test_until_survives_the_requeue_round_trip() -> None:
    """A re-queued message carries the request as model_dump(mode='json'): `until` must parse again."""
    request = parse_request({**BASE, "until": "distributed"})
    again = parse_request(request.model_dump(mode="json"))
    assert again.follow_until == "distributed"


def test_api_item_takes_until_and_passes_it_to_the_task() -> None:
    """POST /v1/refreshes items carry `until` to the task's request unchanged."""
    item = RefreshItem.model_validate({**BASE, "until": "distributed"})
    request = to_request(item, request_id="t:r1", requested_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert request.follow_until == "distributed"
    assert parse_request(request.model_dump(mode="json")).until == "distributed"


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"until": "soon"}, "Input should be"),
        ({"verify": True, "until": "accepted"}, "contradicts until=accepted"),
    ],
)
def test_api_refuses_a_bad_until(extra: dict[str, Any], fragment: str) -> None:
    """The API refuses what the worker would refuse, before anything is enqueued."""
    with pytest.raises(ValidationError) as info:
        RefreshBatch.model_validate({"packages": [{**BASE, **extra}]})
    assert fragment in str(info.value)


def test_the_cli_offers_exactly_the_request_values() -> None:
    """`sccm-refresh enqueue --until` spells the values out (no pydantic for `--help`): they must not drift."""
    assert UNTIL_CHOICES == UNTIL_VALUES == ("accepted", "source_updated", "distributed")
