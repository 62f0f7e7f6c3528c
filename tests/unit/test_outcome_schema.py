"""The outcome schema: builders, consistency rules, JSON round trip, docs/outcome.schema.json."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped,unused-ignore]  # no stubs until types-jsonschema is a dev dep
import pytest
from hypothesis import given
from hypothesis import strategies as st

from errors import (
    AuthError,
    ConnectError,
    InvalidRequestError,
    MediumNotReadyError,
    ProviderFailureError,
    RefreshError,
)
from worker.domain.outcomes import (
    ERROR_MESSAGE_MAX_CHARS,
    OUTCOME_SCHEMA_NAME,
    OUTCOME_SCHEMA_VERSION,
    STATUSES,
    AttemptInfo,
    InvalidOutcomeError,
    Outcome,
    RequestInfo,
    Status,
    format_timestamp,
    parse_timestamp,
)
from worker.wsman import ExtendedStatus

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "outcome.schema.json"
T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
REQUEST = RequestInfo(
    request_id="req-0001",
    site_code="PS1",
    package_class="SMS_DriverPackage",
    package_id="PS100012",
    requested_at=T0,
    correlation_id="bulk-7",
    task_id="9f1c0c1e-task",
    package_name="Drivers - HP EliteBook",
)
SECRET = "Sup3r-S3cret!"
SECRET_LOOKING_KEY = re.compile(r"pass|secret|token|credential|cookie|authorization", re.IGNORECASE)


def run(attempt: int = 1, attempts: int | None = None) -> AttemptInfo:
    return AttemptInfo(
        attempt=attempt,
        attempts=attempts if attempts is not None else attempt,
        started_at=T0 + timedelta(seconds=1),
        finished_at=T0 + timedelta(seconds=2),
        worker="worker-1:4242",
        duration_ms=987.654,
    )


def wmi_failure() -> ProviderFailureError:
    return ProviderFailureError(
        "Generic failure",
        wsman_code=0x80338000,
        wmi_code=0x80041001,
        extended_status=ExtendedStatus("SMS_ExtendedStatus", description="busy", error_code=5, status_code=1),
    )


def distribution(phase: str = "dps", *, final: bool = True, **counts: int) -> dict[str, Any]:
    """A distribution block as worker/domain/follow_report.py writes it."""
    return {
        "phase": phase,
        "targets": 2 if phase == "dps" else None,
        "counts": {"done": 0, "waiting": 0, "retrying": 0, "failed": 0, "unknown": 0, "removed": 0, **counts},
        "dps": [
            {
                "dp": "DP01.corp.example",
                "nal_path": '["Display=\\\\DP01.corp.example\\"]MSWNET:["SMS_SITE=PS1"]\\\\DP01.corp.example\\',
                "status": "done",
                "state": 0,
                "source_version": 4,
                "message_id": 2330,
                "message_at": "20240501120000.000000+000",
            }
        ]
        if phase == "dps"
        else [],
        "dps_omitted": 1 if phase == "dps" else 0,
        "following_since": "2024-05-01T12:00:01.000Z",
        "deadline_at": "2024-05-02T12:00:01.000Z",
        "next_poll_at": None if final else "2024-05-01T12:01:01.000Z",
        "polls": 3,
    }


def followed(status: Status, block: dict[str, Any], *, after: int | None = 4) -> Outcome:
    return Outcome.following(REQUEST, run(), status, block, source_version_before=3, source_version_after=after)


def one_of_each_status() -> list[Outcome]:
    return [
        Outcome.succeeded(REQUEST, run(), source_version_before=3),
        Outcome.succeeded(REQUEST, run(), source_version_before=3, source_version_after=4),
        Outcome.final_failure(REQUEST, run(5), wmi_failure(), return_value=None),
        Outcome.final_failure(REQUEST, run(9), MediumNotReadyError("medium not ready", code=1)),
        Outcome.rejected(REQUEST, run(), InvalidRequestError("task sequence packages need force=true")),
        Outcome.retrying(REQUEST, run(2), ConnectError("connection reset"), next_retry_at=T0 + timedelta(minutes=1)),
        Outcome.cancelled(REQUEST, run()),
        Outcome.succeeded(REQUEST, run(), source_version_before=3).joined_by(replace(REQUEST, request_id="req-0002")),
        followed("distributing", distribution("source", final=False), after=None),
        followed("distributed", distribution(done=2)),
        followed("distributed_with_failures", distribution(done=1, failed=1)),
        followed("distribution_timed_out", distribution(done=1, waiting=1)),
    ]


def _case_id(outcome: Outcome) -> str:
    return outcome.status + ("-joined" if outcome.joined_request_id else "")


def test_builders_cover_every_status() -> None:
    """The builders between them produce each of the eleven statuses."""
    assert sorted({o.status for o in one_of_each_status()}) == sorted(STATUSES)


@pytest.mark.parametrize(
    "outcome", one_of_each_status(), ids=lambda o: o.status + ("-joined" if o.joined_request_id else "")
)
def test_json_round_trip_is_lossless(outcome: Outcome) -> None:
    """to_json then from_json gives back an equal outcome."""
    assert Outcome.from_json(outcome.to_json()) == outcome
    assert Outcome.from_json(outcome.to_json().encode()) == outcome


@pytest.mark.parametrize(
    "outcome", one_of_each_status(), ids=lambda o: o.status + ("-joined" if o.joined_request_id else "")
)
def test_built_outcomes_validate_against_the_json_schema(outcome: Outcome) -> None:
    """Every built outcome satisfies docs/outcome.schema.json."""
    assert schema_errors(json.loads(outcome.to_json())) == []


def test_schema_and_dataclass_agree_on_the_field_set() -> None:
    """The JSON keys emitted are exactly the schema's required properties."""
    schema = json.loads(SCHEMA_PATH.read_text())
    emitted = set(one_of_each_status()[0].to_dict())
    assert emitted == set(schema["required"]) == set(schema["properties"])


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"final": True, "status": "retrying"}, "retrying is never final"),
        ({"final": False}, "only retrying is non-final"),
        ({"error": {"kind": "x"}}, "accepted carries no error, and errors have a fixed key set"),
        ({"status": "failed"}, "failed needs an error"),
        ({"requested_at": "2024-05-01T12:00:00Z"}, "timestamps carry milliseconds"),
        ({"attempt": 0}, "attempt is 1-based"),
        ({"password": SECRET}, "no extra fields"),
        ({"version": 2}, "this is version 3"),
        ({"source_version_before": -1}, "uint32"),
    ],
)
def test_schema_rejects_inconsistent_documents(change: dict[str, Any], why: str) -> None:
    """The schema itself encodes the consistency rules, not just the field types."""
    document = json.loads(one_of_each_status()[0].to_json()) | change
    assert schema_errors(document), why


def test_final_is_derived_from_status() -> None:
    """Only retrying and distributing events are non-final, and the flag cannot be set apart from the status."""
    assert [o.final for o in one_of_each_status()] == [
        True,
        True,
        True,
        True,
        True,
        False,
        True,
        True,
        False,
        True,
        True,
        True,
    ]


def test_succeeded_reports_source_updated_only_when_the_version_rose() -> None:
    """SourceVersion unchanged or unknown is "accepted"; risen is "source_updated"."""
    assert Outcome.succeeded(REQUEST, run()).status == "accepted"
    assert Outcome.succeeded(REQUEST, run(), source_version_before=4, source_version_after=4).status == "accepted"
    assert Outcome.succeeded(REQUEST, run(), source_version_before=4, source_version_after=5).status == "source_updated"


def test_final_failure_picks_the_status_from_the_error() -> None:
    """A final medium-not-ready error is gave_up_medium_not_ready; anything else is failed."""
    assert Outcome.final_failure(REQUEST, run(), MediumNotReadyError("not ready")).status == "gave_up_medium_not_ready"
    assert Outcome.final_failure(REQUEST, run(), ConnectError("reset")).status == "failed"
    assert Outcome.final_failure(REQUEST, run(), AuthError("401")).status == "failed"


def test_retrying_refuses_a_permanent_error() -> None:
    """A permanent error is never retried, so it cannot produce a retrying event."""
    with pytest.raises(InvalidOutcomeError, match="permanent"):
        Outcome.retrying(REQUEST, run(), AuthError("bad credentials"), next_retry_at=T0 + timedelta(minutes=1))


@pytest.mark.parametrize(
    "change",
    [
        {"status": "accepted", "return_value": 1},
        {"status": "accepted", "source_version_after": 4},  # rose: must be source_updated
        {"status": "source_updated"},  # no version increase
        {"status": "retrying"},  # no next_retry_at
        {"next_retry_at": T0 + timedelta(minutes=5)},  # on a final outcome
        {"status": "failed"},  # no error
        {"error": ConnectError("x").as_dict()},  # accepted with an error
        {"attempt": 0},
        {"attempt": 3, "attempts": 2},
        {"finished_at": T0},  # before started_at
        {"duration_ms": -1.0},
        {"duration_ms": float("nan")},
        {"requested_at": datetime(2024, 5, 1, 12, 0, 0)},  # naive
        {"request_id": "has space"},
        {"site_code": ""},
        {"status": "done"},
        {"source_version_before": 2**32},
        {"return_value": True},
    ],
)
def test_construction_refuses_inconsistent_states(change: dict[str, Any]) -> None:
    """Whatever the construction path, an inconsistent outcome raises InvalidOutcomeError."""
    base = Outcome.succeeded(REQUEST, run(), source_version_before=3, source_version_after=3)
    with pytest.raises(InvalidOutcomeError):
        replace(base, **change)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        ("failed", MediumNotReadyError("not ready").as_dict()),
        ("gave_up_medium_not_ready", ConnectError("reset").as_dict()),
        ("rejected", InvalidRequestError("bad").as_dict() | {"password": SECRET}),
        ("rejected", InvalidRequestError("bad").as_dict() | {"message": "x" * (ERROR_MESSAGE_MAX_CHARS + 1)}),
    ],
)
def test_failure_statuses_refuse_mismatched_or_unexpected_errors(status: str, error: dict[str, Any]) -> None:
    """The medium status goes with its error kind only, and the error dict has a fixed, bounded shape."""
    base = Outcome.rejected(REQUEST, run(), InvalidRequestError("bad"))
    with pytest.raises(InvalidOutcomeError):
        replace(base, status=status, error=error)  # type: ignore[arg-type]  # status is deliberately a str


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"schema": "other"}, "not an outcome"),
        ({"version": 1}, "unsupported outcome version"),
        ({"extra": 1}, "unknown"),
        ({"final": False}, "contradicts"),
        ({"started_at": "2024-05-01 12:00:00.000"}, "timestamp"),
    ],
)
def test_from_json_refuses_foreign_or_malformed_documents(change: dict[str, Any], match: str) -> None:
    """Readers refuse other schemas, other versions and documents that do not match version 2 exactly."""
    document = json.loads(one_of_each_status()[0].to_json()) | change
    with pytest.raises(InvalidOutcomeError, match=match):
        Outcome.from_json(json.dumps(document))


def test_from_json_refuses_missing_keys_and_non_json() -> None:
    """A document missing a key, or not JSON at all, is refused with InvalidOutcomeError."""
    document = json.loads(one_of_each_status()[0].to_json())
    del document["worker"]
    with pytest.raises(InvalidOutcomeError, match="missing"):
        Outcome.from_json(json.dumps(document))
    with pytest.raises(InvalidOutcomeError, match="not JSON"):
        Outcome.from_json("{not json")


def test_timestamps_are_utc_with_milliseconds_and_z() -> None:
    """Any timezone is converted to UTC and written with exactly three fractional digits."""
    paris = timezone(timedelta(hours=2))
    moment = datetime(2024, 5, 1, 14, 0, 0, 999999, tzinfo=paris)
    assert format_timestamp(moment) == "2024-05-01T12:00:00.999Z"
    assert parse_timestamp("2024-05-01T12:00:00.999Z") == datetime(2024, 5, 1, 12, 0, 0, 999000, tzinfo=UTC)
    with pytest.raises(InvalidOutcomeError):
        parse_timestamp("2024-05-01T12:00:00.999Z\n")


@pytest.mark.parametrize("text", ["2024-02-30T12:00:00.000Z", "2024-05-01T24:00:00.000Z", "2024-13-01T00:00:00.000Z"])
def test_a_well_spelled_timestamp_of_an_impossible_moment_is_refused(text: str) -> None:
    """The pattern passes it; the calendar does not: an InvalidOutcomeError naming the text."""
    with pytest.raises(InvalidOutcomeError, match="invalid timestamp"):
        parse_timestamp(text)


@given(st.datetimes(timezones=st.just(UTC)), st.datetimes(timezones=st.just(UTC)))
def test_timestamp_text_order_is_chronological_order(a: datetime, b: datetime) -> None:
    """The publisher compares requested_at as strings: that must agree with time order."""
    text_a, text_b = format_timestamp(a), format_timestamp(b)
    assert (text_a < text_b) == (parse_timestamp(text_a) < parse_timestamp(text_b))


class LeakyError(AuthError):
    """An error that (wrongly) keeps the credentials it was raised with."""

    def __init__(self, message: str, *, password: str) -> None:
        super().__init__(message, http_status=401)
        self.password = password
        self.headers = {"Authorization": f"Basic {password}"}


def test_outcomes_never_carry_secret_looking_fields() -> None:
    """Extra attributes on an error never reach the outcome; no key anywhere looks like a secret."""
    outcome = Outcome.final_failure(REQUEST, run(), LeakyError("the server rejected the credentials", password=SECRET))
    assert SECRET not in outcome.to_json()
    for each in [*one_of_each_status(), outcome]:
        assert [key for key in walk_keys(each.to_dict()) if SECRET_LOOKING_KEY.search(key)] == []


def test_long_error_messages_are_capped() -> None:
    """A huge fault text is cut to ERROR_MESSAGE_MAX_CHARS so stream entries stay small."""
    outcome = Outcome.rejected(REQUEST, run(), RefreshError("x" * 10_000))
    assert outcome.error is not None
    assert len(outcome.error["message"]) == ERROR_MESSAGE_MAX_CHARS


def test_outcome_json_names_schema_and_version() -> None:
    """Every outcome says which schema and version it follows."""
    data = json.loads(one_of_each_status()[0].to_json())
    assert (data["schema"], data["version"]) == (OUTCOME_SCHEMA_NAME, OUTCOME_SCHEMA_VERSION)


def walk_keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [key for key, item in value.items() for key in [key, *walk_keys(item)]]
    if isinstance(value, list):
        return [key for item in value for key in walk_keys(item)]
    return []


# -- JSON Schema validation -----------------------------------------------------------------------


def schema_errors(document: Any) -> list[str]:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return [error.message for error in jsonschema.Draft202012Validator(schema).iter_errors(document)]


def test_a_joined_outcome_is_its_leaders_result_under_its_own_request() -> None:
    """The follower's final copies the leader's status and results, keeps its own ids, and names the leader."""
    leader = Outcome.final_failure(REQUEST, run(3), wmi_failure())
    follower = replace(REQUEST, request_id="req-0002", correlation_id="bulk-9", task_id="t-2")
    joined = leader.joined_by(follower)
    assert (joined.request_id, joined.correlation_id, joined.task_id) == ("req-0002", "bulk-9", "t-2")
    assert joined.joined_request_id == "req-0001" and joined.status == "failed" and joined.error == leader.error
    with pytest.raises(InvalidOutcomeError):
        Outcome.cancelled(REQUEST, run()).joined_by(follower)


def test_a_version_2_document_is_still_read() -> None:
    """Outcomes written before version 3 (no `distribution` key) stay readable: stored history survives the upgrade."""
    document = json.loads(one_of_each_status()[1].to_json())
    del document["distribution"]
    document["version"] = 2
    outcome = Outcome.from_json(json.dumps(document))
    assert outcome.status == "source_updated" and outcome.distribution is None


def test_a_version_2_document_cannot_carry_a_distribution() -> None:
    """Version 2 had no distribution statuses: a document claiming both is refused, not half-read."""
    document = json.loads(one_of_each_status()[-3].to_json())
    document["version"] = 2
    with pytest.raises(InvalidOutcomeError, match="version 2"):
        Outcome.from_json(json.dumps(document))


@pytest.mark.parametrize(
    ("status", "block", "after", "match"),
    [
        ("distributed", distribution("source"), None, "phase is dps"),
        ("distributed", distribution(final=False), 4, "next_poll_at"),
        ("distributing", distribution(final=True), 4, "next_poll_at"),
        ("distributed", distribution(), 3, "V1"),
        ("distributed", {**distribution(), "extra": 1}, 4, "exactly the keys"),
        ("distributed", {**distribution(), "counts": {"done": -1}}, 4, "exactly the keys"),
        ("distributed", {**distribution(), "dps": [{"dp": "x"}]}, 4, "exactly the keys"),
        ("distributed", {**distribution(), "polls": True}, 4, "count"),
        ("distributed", {**distribution(), "deadline_at": "tomorrow"}, 4, "timestamp"),
    ],
)
def test_distribution_blocks_that_break_the_rules_are_refused(
    status: Status, block: dict[str, Any], after: int | None, match: str
) -> None:
    """A reader never takes a distribution block of the wrong shape, or one whose phase contradicts its status."""
    with pytest.raises(InvalidOutcomeError, match=match):
        followed(status, block, after=after)


def test_only_followed_statuses_carry_a_distribution_block() -> None:
    """An accepted outcome with a distribution block, or a distributed one without, is refused."""
    with pytest.raises(InvalidOutcomeError, match="forbids distribution"):
        replace(one_of_each_status()[0], distribution=distribution())
    with pytest.raises(InvalidOutcomeError, match="requires distribution"):
        replace(followed("distributed", distribution()), distribution=None)


def test_distributing_is_not_final() -> None:
    """A distributing event is followed by exactly one final: it must never take the final's place."""
    assert followed("distributing", distribution(final=False)).final is False
    assert followed("distributed", distribution()).final is True
