"""Following a refresh to every DP, the pure core: phases, the V0/V1 trap, verdicts, back-off."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from cli.commands import format_outcome
from config.settings import FollowSettings
from worker.domain.distribution import DpMessage, DpState, DpStatusRow
from worker.domain.follow import FollowState, assess, next_poll_s
from worker.domain.follow_report import distribution_block
from worker.domain.outcomes import AttemptInfo, Outcome, RequestInfo

POLICY = FollowSettings(
    first_poll_s=60, poll_multiplier=2, max_poll_s=1800, deadline_s=3600, retrying_failed_after_s=600
)
T0 = 1_800_000_000.0
WHEN = datetime.fromtimestamp(T0, UTC)


def nal(dp: str) -> str:
    return f'["Display=\\\\{dp}\\"]MSWNET:["SMS_SITE=PS1"]\\\\{dp}\\'


def row(dp: str, state: int, version: int) -> DpStatusRow:
    known = {int(s): s for s in DpState}
    return DpStatusRow("PS100001", nal(dp), dp, known.get(state), state, version)


def following(rows: list[DpStatusRow], v1: int | None = 5) -> FollowState:
    state = FollowState.accepted(4, T0).with_targets(rows, 1000)
    if v1 is not None:
        state = assess(state, package_version=v1, rows=None, now=T0 + 1, policy=POLICY).state
    return state


def test_phase_one_waits_for_source_version_to_pass_v0() -> None:
    """Until DistMgr has bumped SourceVersion there is no V1, and nothing about the DPs can be said."""
    state = FollowState.accepted(4, T0)
    step = assess(state, package_version=4, rows=None, now=T0 + 60, policy=POLICY)
    assert step.verdict == "following" and step.state.v1 is None
    step = assess(step.state, package_version=6, rows=None, now=T0 + 120, policy=POLICY)
    assert step.state.v1 == 6


def test_the_poll_that_sees_v1_is_news_even_when_no_count_moved() -> None:
    """V1 seen: a `distributing` event goes out (phase two began), counts unchanged or not; not again after."""
    state = replace(FollowState.accepted(4, T0), targets=(nal("DP01"),))
    first = assess(state, package_version=4, rows=None, now=T0 + 60, policy=POLICY).reported()
    assert not first.news
    seen = assess(first.state, package_version=5, rows=None, now=T0 + 120, policy=POLICY)
    assert seen.source_updated_now and seen.news and not seen.counts_changed
    after = assess(seen.reported().state, package_version=None, rows=None, now=T0 + 180, policy=POLICY)
    assert not after.source_updated_now and not after.news


def test_rows_at_the_old_version_in_state_0_are_never_done() -> None:
    """The V0/V1 trap: every row State 0 at V0 right after acceptance is waiting, not distributed."""
    rows = [row("DP01", 0, 4), row("DP02", 0, 4)]
    step = assess(following(rows), package_version=None, rows=rows, now=T0 + 60, policy=POLICY)
    assert step.verdict == "following"
    assert step.counts["waiting"] == 2 and step.counts["done"] == 0


def test_every_target_at_v1_in_state_0_is_distributed() -> None:
    """State 0 at V1 (or a later version) on every target: distributed, no next poll."""
    state = following([row("DP01", 0, 4), row("DP02", 0, 4)])
    step = assess(state, package_version=None, rows=[row("DP01", 0, 5), row("DP02", 0, 6)], now=T0 + 60, policy=POLICY)
    assert step.verdict == "distributed" and step.next_poll_s is None
    assert step.counts["done"] == 2


def test_targets_a_filtered_read_left_out_are_done_only_when_settled_at_v1_or_later() -> None:
    """A filtered read lists only rows not installed at `settled_at`: a target it left out is done
    when that version is V1 or later, and proves nothing when it is older (another follower's)."""
    state = following([row("DP01", 0, 4), row("DP02", 0, 4)])
    listed = [row("DP02", 2, 4)]
    step = assess(state, package_version=None, rows=listed, settled_at=5, now=T0 + 60, policy=POLICY)
    assert step.verdict == "following" and step.counts["done"] == 1 and step.counts["retrying"] == 1
    done = next(report for report in step.rows if report.dp == "DP01")
    assert done.state == 0 and done.source_version == 5
    assert assess(state, package_version=None, rows=[], settled_at=5, now=T0 + 60, policy=POLICY).verdict == (
        "distributed"
    )
    older = assess(state, package_version=None, rows=[], settled_at=4, now=T0 + 60, policy=POLICY)
    assert older.verdict == "following" and older.counts["unknown"] == 2


def test_a_failed_dp_ends_with_failures_once_nothing_else_moves() -> None:
    """State 3 on one target: distributed_with_failures, but only once no other target is still waiting."""
    state = following([row("DP01", 0, 4), row("DP02", 0, 4)])
    busy = assess(state, package_version=None, rows=[row("DP01", 7, 4), row("DP02", 3, 4)], now=T0 + 60, policy=POLICY)
    assert busy.verdict == "following"
    done = assess(
        busy.state, package_version=None, rows=[row("DP01", 0, 5), row("DP02", 3, 4)], now=T0 + 90, policy=POLICY
    )
    assert done.verdict == "distributed_with_failures"
    assert [r.status for r in done.rows] == ["failed", "done"]  # stragglers first


def test_retrying_past_the_configured_age_counts_as_failed() -> None:
    """A DP retrying for retrying_failed_after_s is failed: ConfigMgr would retry it for days."""
    state = following([row("DP01", 0, 4)])
    first = assess(state, package_version=None, rows=[row("DP01", 2, 4)], now=T0 + 60, policy=POLICY)
    assert first.counts["retrying"] == 1
    later = assess(first.state, package_version=None, rows=[row("DP01", 2, 4)], now=T0 + 60 + 600, policy=POLICY)
    assert later.verdict == "distributed_with_failures" and later.counts["failed"] == 1


def test_the_deadline_ends_following_as_timed_out_with_waiting_dps_named_waiting() -> None:
    """An offline or pull DP still in progress at the deadline is waiting (not failed); the verdict is timed out."""
    state = following([row("DP01", 0, 4), row("DP02", 0, 4)])
    rows = [row("DP01", 0, 5), row("DP02", 1, 4)]
    step = assess(state, package_version=None, rows=rows, now=T0 + 3600, policy=POLICY)
    assert step.verdict == "distribution_timed_out"
    assert step.counts == {"done": 1, "waiting": 1, "retrying": 0, "failed": 0, "unknown": 0, "removed": 0}


def test_phase_one_times_out_too() -> None:
    """SourceVersion never rising by the deadline: timed out, with no V1."""
    step = assess(FollowState.accepted(4, T0), package_version=4, rows=None, now=T0 + 3600, policy=POLICY)
    assert step.verdict == "distribution_timed_out" and step.state.v1 is None


def test_removed_rows_and_unknown_states() -> None:
    """A row leaving the DP, or gone, is no longer a target; a State the SDK does not list is unknown, never done."""
    state = following([row("DP01", 0, 4), row("DP02", 0, 4), row("DP03", 0, 4)])
    rows = [row("DP01", 0, 5), row("DP02", 4, 4), row("DP03", 42, 5)]
    step = assess(state, package_version=None, rows=rows, now=T0 + 60, policy=POLICY)
    assert step.verdict == "following"
    assert (step.counts["done"], step.counts["removed"], step.counts["unknown"]) == (1, 1, 1)
    gone = assess(step.state, package_version=None, rows=[row("DP01", 0, 5)], now=T0 + 90, policy=POLICY)
    assert gone.verdict == "distributed" and gone.counts["removed"] == 2


def test_a_truncated_read_makes_missing_targets_unknown_not_removed() -> None:
    """A read cut at its row bound proves nothing about the rows it did not reach."""
    state = following([row("DP01", 0, 4), row("DP02", 0, 4)])
    step = assess(state, package_version=None, rows=[row("DP01", 0, 5)], truncated=True, now=T0 + 60, policy=POLICY)
    assert step.verdict == "following" and step.counts["unknown"] == 1


def test_targets_leave_out_rows_being_removed() -> None:
    """At acceptance, rows in States 4-6 are leaving the DP: not targets."""
    state = FollowState.accepted(4, T0).with_targets([row("DP01", 0, 4), row("DP02", 5, 4)], 1000)
    assert state.targets == (nal("DP01"),)


@pytest.mark.parametrize(("polls", "expected"), [(0, 60), (1, 120), (4, 960), (5, 1800), (500, 1800)])
def test_poll_intervals_back_off_to_the_cap(polls: int, expected: float) -> None:
    """Minutes at first, doubling, capped at half an hour by default."""
    assert next_poll_s(polls, POLICY) == expected


def test_the_last_poll_lands_on_the_deadline() -> None:
    """A wait never runs past the deadline, so a timeout is reported on time."""
    state = FollowState.accepted(4, T0)
    step = assess(state, package_version=4, rows=None, now=T0 + 3590, policy=POLICY)
    assert step.next_poll_s == pytest.approx(10)


def test_counts_changed_only_when_they_did() -> None:
    """A distributing event goes out when the counts move, not every poll."""
    state = following([row("DP01", 0, 4)])
    step = assess(state, package_version=None, rows=[row("DP01", 7, 4)], now=T0 + 60, policy=POLICY)
    assert step.counts_changed
    again = assess(step.reported().state, package_version=None, rows=[row("DP01", 7, 4)], now=T0 + 120, policy=POLICY)
    assert not again.counts_changed


def test_the_block_bounds_rows_and_carries_messages_into_a_valid_outcome() -> None:
    """At most max_dp_rows rows, the rest counted; the last status message per DP; the outcome validates."""
    targets = [row(f"DP{n:02d}", 0, 4) for n in range(1, 6)]
    rows = [row(f"DP{n:02d}", 0, 5) for n in range(1, 6)]
    messages = [DpMessage("PS100001", nal("DP01"), 2330, 1, "20260101000000.000000+000")]
    step = assess(following(targets), package_version=None, rows=rows, messages=messages, now=T0 + 60, policy=POLICY)
    block = distribution_block(step, max_rows=2, now=T0 + 60, policy=POLICY)
    assert len(block["dps"]) == 2 and block["dps_omitted"] == 3
    assert block["dps"][0]["message_id"] == 2330 and block["dps"][0]["dp"] == "DP01"
    request = RequestInfo("r1", "PS1", "SMS_Package", "PS100001", WHEN)
    run = AttemptInfo(1, 1, WHEN, WHEN, "w:1")
    outcome = Outcome.following(request, run, "distributed", block, source_version_before=4, source_version_after=5)
    assert Outcome.from_json(outcome.to_json()) == outcome


def test_forged_states_are_not_plausible() -> None:
    """A follow state from a message no worker wrote (V1 not above V0, a time far off) is discarded."""
    good = following([row("DP01", 0, 4)])
    assert good.plausible(T0 + 10, 86_400, 1000)
    assert not FollowState(v0=5, started_at=T0, v1=5).plausible(T0, 86_400, 1000)
    assert not FollowState(v0=5, started_at=T0 + 10 * 86_400).plausible(T0, 86_400, 1000)
    assert not FollowState(v0=5, started_at=T0, retrying_since=(("x", T0),)).plausible(T0, 86_400, 1000)
    assert not FollowState(v0=5, started_at=T0, targets=("x" * 600,)).plausible(T0, 86_400, 1000)
    assert not FollowState(v0=5, started_at=T0, targets=("\\\\DP01\\\x00",)).plausible(T0, 86_400, 1000)


def test_the_watch_line_of_a_followed_request_names_counts_and_stragglers() -> None:
    """`sccm-refresh watch` shows how far the content got and which DPs hold it back."""
    state = following([row("DP01", 0, 4), row("DP02", 0, 4)])
    rows = [row("DP01", 0, 5), row("DP02", 3, 4)]
    step = assess(state, package_version=None, rows=rows, now=T0 + 60, policy=POLICY)
    block = distribution_block(step, max_rows=5, now=T0 + 60, policy=POLICY)
    request = RequestInfo("r1", "PS1", "SMS_Package", "PS100001", WHEN)
    run = AttemptInfo(1, 1, WHEN, WHEN, "w:1")
    outcome = Outcome.following(request, run, step.verdict, block, source_version_before=4, source_version_after=5)
    line = format_outcome(outcome)
    assert "distributed_with_failures" in line and "DPs: 1 done, 1 failed (DP02 failed)" in line


def test_a_poll_without_rows_tells_the_counts_it_told_last() -> None:
    """A phase-two poll whose rows were not read (left to the rollup, or skipped) must not tell the
    DPs already done as waiting again: it carries the counts last told, and no change is reported."""
    state = following([row("DP01", 0, 4), row("DP02", 0, 4)])
    told = assess(state, package_version=None, rows=[row("DP01", 0, 5), row("DP02", 1, 4)], now=T0 + 60, policy=POLICY)
    told = told.reported()
    held = assess(told.state, package_version=None, rows=None, now=T0 + 120, policy=POLICY)
    assert held.verdict == "following" and held.counts["done"] == 1 and held.counts["waiting"] == 1
    assert not held.counts_changed
