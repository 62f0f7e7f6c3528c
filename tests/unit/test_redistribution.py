"""Opt-in redistribution while following to every DP: which rows qualify, the window, the verdicts
after a RefreshNow, the state carried in the message, the outcome block, the request field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import pytest

from cli.main import main as cli_main
from config.settings import FollowSettings
from errors import AccessDeniedError, InvalidRequestError, RefreshError
from testing.standins import MemoryRedistributionMarks
from worker.domain.deadline import Deadline
from worker.domain.distribution import DpState, DpStatusBatch, DpStatusRow
from worker.domain.follow import FollowState, FollowStep, Redistribution, assess
from worker.domain.follow_report import distribution_block
from worker.domain.outcomes import AttemptInfo, InvalidOutcomeError, Outcome, RequestInfo
from worker.domain.redistribution import MAX_PER_POLL, due_for_redistribution
from worker.domain.request import RetryState, parse_request
from worker.stores.keys import RedisKeys
from worker.usecase.attempt import UngatedOperations
from worker.usecase.follow import DirectReader, poll
from worker.usecase.redistribute import Redistributor

POLICY = FollowSettings(
    first_poll_s=60,
    max_poll_s=1800,
    deadline_s=86_400,
    retrying_failed_after_s=6 * 3600,
    redistribute_after_s=4 * 3600,
    redistribute_window_s=24 * 3600,
    redistribute_settle_s=1800,
)
T0 = 1_800_000_000.0
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "outcome.schema.json"
NOT_BOOL = "redistribute_failed: Input should be a valid boolean"


def nal(dp: str) -> str:
    return f'["Display=\\\\{dp}\\"]MSWNET:["SMS_SITE=PS1"]\\\\{dp}\\'


def row(dp: str, state: int, version: int) -> DpStatusRow:
    return DpStatusRow("PS100001", nal(dp), dp, DpState(state), state, version, site_code="PS1")


def following(*dps: str) -> FollowState:
    rows = [row(dp, 0, 4) for dp in dps]
    state = FollowState.accepted(4, T0).with_targets(rows, 1000)
    return assess(state, package_version=5, rows=None, now=T0 + 1, policy=POLICY).state


def step_at(state: FollowState, rows: list[DpStatusRow], now: float) -> FollowStep:
    return assess(state, package_version=None, rows=rows, now=now, policy=POLICY)


def due_dps(step: FollowStep, now: float) -> list[str]:
    return [r.dp for r in due_for_redistribution(step, now=now, policy=POLICY)]


# -- which rows qualify ------------------------------------------------------------------------


def test_a_failed_dp_is_due_and_a_copying_or_done_one_is_not() -> None:
    """State 3 qualifies at once; States 0, 1, 7 never do."""
    state = following("DP01", "DP02", "DP03", "DP04")
    rows = [row("DP01", 3, 4), row("DP02", 0, 5), row("DP03", 1, 4), row("DP04", 7, 4)]
    assert due_dps(step_at(state, rows, T0 + 60), T0 + 60) == ["DP01"]


def test_a_dp_retrying_is_due_only_after_redistribute_after_s() -> None:
    """State 2 qualifies once this request has seen it retrying for redistribute_after_s (4 h)."""
    state = following("DP01")
    first = step_at(state, [row("DP01", 2, 4)], T0 + 60)
    assert due_dps(first, T0 + 60) == []
    later = step_at(first.state, [row("DP01", 2, 4)], T0 + 60 + 4 * 3600 - 1)
    assert due_dps(later, T0 + 60 + 4 * 3600 - 1) == []
    past = step_at(later.state, [row("DP01", 2, 4)], T0 + 60 + 4 * 3600)
    assert due_dps(past, T0 + 60 + 4 * 3600) == ["DP01"]


def test_nothing_is_due_before_v1() -> None:
    """Phase one: a failed row is the old version's; the refresh itself re-sends it."""
    state = FollowState.accepted(4, T0).with_targets([row("DP01", 3, 4)], 1000)
    step = assess(state, package_version=4, rows=[row("DP01", 3, 4)], now=T0 + 60, policy=POLICY)
    assert due_dps(step, T0 + 60) == []


def test_a_dp_redistributed_within_the_window_is_not_due_again() -> None:
    """Once per package and DP per window: still failed an hour later, not due; a day later, due again."""
    sent_at = T0 + 60
    state = following("DP01").with_redistributions([Redistribution(nal("DP01"), sent_at, moved=True)])
    failed = [row("DP01", 3, 4)]
    assert due_dps(step_at(state, failed, sent_at + 3600), sent_at + 3600) == []
    assert due_dps(step_at(state, failed, sent_at + 24 * 3600), sent_at + 24 * 3600) == ["DP01"]


def test_a_refused_redistribution_is_not_retried_within_the_window() -> None:
    """A Put the provider refused counts as sent: it may have landed (a timeout), and each landing re-sends."""
    refused = Redistribution.refused(nal("DP01"), T0 + 60, "timeout", "no answer in 20 s")
    state = following("DP01").with_redistributions([refused])
    assert due_dps(step_at(state, [row("DP01", 3, 4)], T0 + 120), T0 + 120) == []


def test_at_most_max_per_poll_dps_are_due_in_one_poll() -> None:
    """A thousand failed DPs are redistributed a few per poll, not all in one delivery."""
    dps = [f"DP{n:03d}" for n in range(MAX_PER_POLL + 5)]
    state = following(*dps)
    assert len(due_dps(step_at(state, [row(dp, 3, 4) for dp in dps], T0 + 60), T0 + 60)) == MAX_PER_POLL


# -- what a redistributed DP counts as ---------------------------------------------------------


def test_a_redistributed_failed_dp_is_retrying_until_it_settles() -> None:
    """Just sent RefreshNow and still reading State 3: retrying (the request goes on), for at most
    redistribute_settle_s; then failed again."""
    state = following("DP01", "DP02").with_redistributions([Redistribution(nal("DP01"), T0 + 60)])
    rows = [row("DP01", 3, 4), row("DP02", 0, 5)]
    soon = step_at(state, rows, T0 + 120)
    assert soon.verdict == "following" and soon.counts["retrying"] == 1
    settled = step_at(state, rows, T0 + 60 + 1800)
    assert settled.verdict == "distributed_with_failures" and settled.counts["failed"] == 1


def test_a_redistributed_dp_seen_moving_then_failing_again_is_failed() -> None:
    """Seen copying after the Put, then State 3: a new failure, counted at once (no second Put in the window)."""
    state = following("DP01").with_redistributions([Redistribution(nal("DP01"), T0 + 60)])
    copying = step_at(state, [row("DP01", 7, 4)], T0 + 120)
    assert copying.state.redistributed[0].moved
    failed = step_at(copying.state, [row("DP01", 3, 4)], T0 + 180)
    assert failed.verdict == "distributed_with_failures"
    assert due_dps(failed, T0 + 180) == []


def test_a_redistributed_dp_at_v1_in_state_0_is_done() -> None:
    """The re-send landed: State 0 at V1 counts done, and the request ends distributed."""
    state = following("DP01", "DP02").with_redistributions([Redistribution(nal("DP01"), T0 + 60)])
    step = step_at(state, [row("DP01", 0, 5), row("DP02", 0, 5)], T0 + 600)
    assert step.verdict == "distributed" and step.counts["done"] == 2


def test_a_redistributed_retrying_dp_starts_its_retrying_clock_afresh() -> None:
    """Retrying 5 h, redistributed: not failed an hour later although retrying_failed_after_s is 6 h."""
    state = following("DP01")
    first = step_at(state, [row("DP01", 2, 4)], T0 + 60)
    at = T0 + 60 + 5 * 3600
    state = step_at(first.state, [row("DP01", 2, 4)], at).state.with_redistributions([Redistribution(nal("DP01"), at)])
    later = step_at(state, [row("DP01", 2, 4)], at + 3600)
    assert later.counts["retrying"] == 1 and later.verdict == "following"


# -- the poll with a redistributor ---------------------------------------------------------------


class _Provider:
    """A provider client with one package on the given rows; records RefreshNow Puts."""

    def __init__(self, rows: list[DpStatusRow], refuse: RefreshError | None = None) -> None:
        self.rows = rows
        self.refuse = refuse
        self.puts: list[tuple[str, str, str | None]] = []

    def refresh_now(
        self, package_id: str, nal_path: str, *, dp_site_code: str | None = None, deadline: Deadline | None = None
    ) -> None:
        self.puts.append((package_id, nal_path, dp_site_code))
        if self.refuse is not None:
            raise self.refuse

    def read_dp_status(self, package_ids: Any, *, max_rows: int = 0, deadline: Any = None) -> DpStatusBatch:
        return DpStatusBatch(rows=tuple(self.rows))

    def read_dp_messages(self, package_ids: Any, *, max_rows: int = 0, deadline: Any = None) -> DpStatusBatch:
        return DpStatusBatch()

    def get_package(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("phase two reads no package")

    def read_source_versions(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("not used")


REQUEST = parse_request(
    {"site_code": "PS1", "package_id": "PS100001", "until": "distributed", "redistribute_failed": True}
)


def _poll(provider: _Provider, marks: MemoryRedistributionMarks, state: FollowState, now: float) -> FollowStep:
    gate = UngatedOperations()
    redistributor = Redistributor(provider, marks, gate, REQUEST, policy=POLICY)
    return poll(DirectReader(provider), gate, REQUEST, state, now=now, policy=POLICY, redistribute=redistributor)


def test_a_poll_that_redistributes_is_not_the_final_and_tells_it() -> None:
    """DP02 failed, the rest done: without redistribution the final; with it, RefreshNow once, following on."""
    now = T0 + 60
    marks = MemoryRedistributionMarks(lambda: now)
    provider = _Provider([row("DP01", 0, 5), row("DP02", 3, 4)])
    step = _poll(provider, marks, following("DP01", "DP02"), now)
    assert provider.puts == [("PS100001", nal("DP02"), "PS1")]
    assert step.verdict == "following" and [e.nal_path for e in step.redistributed_now] == [nal("DP02")]
    block = distribution_block(step, max_rows=5, now=now, policy=POLICY, redistributes=True)
    assert block["redistributed"] == [
        {"dp": "DP02", "nal_path": nal("DP02"), "at": "2027-01-15T08:01:00.000Z", "error": None}
    ]


def test_two_workers_on_the_same_package_and_dp_send_one_refresh_now_per_window() -> None:
    """Two requests (two workers) following one package: the marker lets only the first send it."""
    now = T0 + 60
    marks = MemoryRedistributionMarks(lambda: now)
    first, second = _Provider([row("DP01", 3, 4)]), _Provider([row("DP01", 3, 4)])
    _poll(first, marks, following("DP01"), now)
    other = _poll(second, marks, following("DP01"), now)
    assert (len(first.puts), len(second.puts)) == (1, 0)
    assert other.redistributed_now == () and other.verdict == "distributed_with_failures"


def test_a_refused_put_is_reported_and_not_fatal() -> None:
    """The provider refuses RefreshNow (access denied): the poll goes on, the block names the error,
    and the DP stays failed."""
    now = T0 + 60
    provider = _Provider([row("DP01", 3, 4)], refuse=AccessDeniedError("Access denied"))
    step = _poll(provider, MemoryRedistributionMarks(lambda: now), following("DP01"), now)
    assert step.verdict == "distributed_with_failures" and step.counts["failed"] == 1
    block = distribution_block(step, max_rows=5, now=now, policy=POLICY, redistributes=True)
    assert block["redistributed"][0]["error"] == {"kind": "access_denied", "message": "Access denied"}


# -- the state in the message, the outcome, the key, the request ----------------------------------


def test_the_redistributions_travel_in_the_retry_state() -> None:
    """Written to the message and read back as they were; an entry for a DP that is no target is forged."""
    state = following("DP01").with_redistributions([Redistribution(nal("DP01"), T0 + 60)])
    kwargs = RetryState(follow=state).to_kwargs()
    assert RetryState.from_kwargs(kwargs, now=T0 + 120).follow == state
    kwargs["follow"]["redistributed"][0]["nal_path"] = nal("DP99")
    assert RetryState.from_kwargs(kwargs, now=T0 + 120).follow is None


def _outcome(block: dict[str, Any]) -> Outcome:
    when = datetime.fromtimestamp(T0, UTC)
    request = RequestInfo("r-1", "PS1", "SMS_Package", "PS100001", requested_at=when)
    run = AttemptInfo(1, 1, when, when, "w", 1.0)
    return Outcome.following(request, run, "distributing", block, source_version_before=4, source_version_after=5)


def test_an_outcome_with_redistributions_satisfies_the_schema() -> None:
    """The block's `redistributed` list passes the reader and docs/outcome.schema.json; a bad entry is refused."""
    state = following("DP01", "DP02").with_redistributions(
        [Redistribution(nal("DP01"), T0 + 60), Redistribution.refused(nal("DP02"), T0 + 60, "timeout", "late")]
    )
    step = step_at(state, [row("DP01", 3, 4), row("DP02", 3, 4)], T0 + 90)
    assert step.verdict == "following"
    block = distribution_block(step, max_rows=5, now=T0 + 90, policy=POLICY, redistributes=True)
    document = _outcome(block).to_dict()
    schema = json.loads(SCHEMA_PATH.read_text())
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(document)) == []
    assert Outcome.from_dict(document).distribution == block
    broken = {**block, "redistributed": [{"dp": "DP01", "at": "soon"}]}
    with pytest.raises(InvalidOutcomeError):
        _outcome(broken)


def test_the_marker_key_names_the_dp_by_a_digest() -> None:
    """Quotes, brackets and backslashes of a NAL path never reach the key; its case does not matter."""
    keys = RedisKeys("t")
    key = keys.redistribute_mark("ps1", "ps100001", nal("DP01"))
    assert key == keys.redistribute_mark("PS1", "PS100001", nal("dp01"))
    assert key.startswith("t:redistribute:PS1:PS100001:") and not set('"[]\\') & set(key)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"redistribute_failed": "yes", "until": "distributed"}, NOT_BOOL),
        ({"redistribute_failed": 1, "until": "distributed"}, NOT_BOOL),
        ({"redistribute_failed": True}, "redistribute_failed=true needs until=distributed"),
        ({"redistribute_failed": True, "until": "accepted"}, "redistribute_failed=true needs until=distributed"),
    ],
)
def test_a_request_asks_redistribution_as_a_boolean_with_until_distributed(
    fields: dict[str, Any], problem: str
) -> None:
    """A string or a number is no boolean; with another `until` it would do nothing: both refused."""
    with pytest.raises(InvalidRequestError, match=problem):
        parse_request({"site_code": "PS1", "package_id": "PS100001", **fields})


def test_a_message_that_does_not_ask_carries_no_redistribute_field() -> None:
    """False is left out of the kwargs: a worker that predates the field would refuse it as unknown."""
    request = parse_request({"site_code": "PS1", "package_id": "PS100001", "until": "distributed"})
    assert "redistribute_failed" not in request.model_dump(mode="json")
    assert REQUEST.model_dump(mode="json")["redistribute_failed"] is True


def test_the_cli_refuses_redistribution_without_until_distributed(capsys: pytest.CaptureFixture[str]) -> None:
    """`enqueue --redistribute-failed` without `--until distributed`: exit 2, nothing enqueued, no Redis needed."""
    assert cli_main(["enqueue", "PS1", "PS100001", "--redistribute-failed"]) == 2
    assert "redistribute_failed=true needs until=distributed" in capsys.readouterr().err
