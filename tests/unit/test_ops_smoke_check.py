"""ops/smoke_check.py: judging requests by their final outcomes."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any, cast

from ops.smoke_check import judge
from worker.domain.outcomes import Outcome


def outcome(request_id: str, status: str, *, final: bool = True, worker: str = "h:1") -> Outcome:
    return cast(Outcome, SimpleNamespace(request_id=request_id, status=status, final=final, worker=worker))


def test_every_request_with_exactly_one_final_outcome_is_ok() -> None:
    """Retrying events do not count; one final each passes, with counts by status and worker."""
    outcomes: list[Any] = [
        outcome("a", "retrying", final=False),
        outcome("a", "accepted"),
        outcome("b", "failed", worker="h:2"),
    ]
    verdict = judge(outcomes, ["a", "b"])
    assert verdict.ok and verdict.statuses == Counter({"accepted": 1, "failed": 1})
    assert verdict.workers == Counter({"h:1": 1, "h:2": 1})
    assert "OK: every request has exactly one final outcome" in verdict.summary()


def test_missing_and_duplicated_finals_fail_and_are_named() -> None:
    """A request without a final outcome, or with two, fails the check; unrelated outcomes are ignored."""
    verdict = judge([outcome("a", "accepted"), outcome("a", "accepted"), outcome("z", "accepted")], ["a", "b"])
    assert not verdict.ok
    assert verdict.missing == ("b",) and verdict.duplicated == ("a",)
    assert "FAILED" in verdict.summary()


def test_nothing_to_check_is_not_ok() -> None:
    """An empty list of requests is a failed smoke test, not a vacuous pass."""
    assert not judge([], []).ok
