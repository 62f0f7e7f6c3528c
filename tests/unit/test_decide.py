"""The retry decision after a failed attempt, as a pure function."""

from __future__ import annotations

from config.settings import RetryPolicy, RetrySettings
from errors import AuthError, MediumNotReadyError, QuotaError
from worker.domain.request import RetryState
from worker.usecase.decide import decide_after_error, wake_early

RETRY = RetrySettings(
    in_call=RetryPolicy(max_attempts=1, initial_backoff_s=0, max_backoff_s=0),
    transient=RetryPolicy(max_attempts=3, initial_backoff_s=10, max_backoff_s=100, jitter=0.0),
    medium=RetryPolicy(max_attempts=4, initial_backoff_s=600, max_backoff_s=3600, jitter=0.0, deadline_s=7200),
)
NOW = 1_000_000.0


def test_permanent_error_fails_at_once() -> None:
    """Bad credentials are never retried: retrying only locks the account."""
    decision = decide_after_error(AuthError("401"), RetryState(attempts=1), RETRY, now=NOW, max_countdown_s=900)
    assert decision.verdict == "fail"


def test_transient_error_is_retried_with_backoff_then_fails_when_exhausted() -> None:
    """Quota faults back off 10 s, 20 s, then the transient budget is spent."""
    state = RetryState(attempts=1)
    delays = []
    for _ in range(2):
        decision = decide_after_error(QuotaError("quota"), state, RETRY, now=NOW, max_countdown_s=900)
        assert decision.verdict == "retry"
        delays.append(decision.countdown_s)
        state = decision.state
    assert delays == [10.0, 20.0]
    final = decide_after_error(QuotaError("quota"), state, RETRY, now=NOW, max_countdown_s=900)
    assert final.verdict == "fail"


def test_long_medium_wait_is_split_below_the_visibility_timeout() -> None:
    """A 600 s wait with a 300 s countdown cap re-queues at 300 s with not_before at 600 s."""
    decision = decide_after_error(
        MediumNotReadyError("not ready"), RetryState(attempts=1), RETRY, now=NOW, max_countdown_s=300
    )
    assert decision.verdict == "retry"
    assert decision.countdown_s == 300
    assert decision.state.not_before == NOW + 600
    assert wake_early(decision.state, now=NOW + 300, max_countdown_s=300) == 300
    assert wake_early(decision.state, now=NOW + 600, max_countdown_s=300) is None


def test_medium_wait_gives_up_at_its_deadline() -> None:
    """After the medium policy's deadline the verdict is give_up_medium, not a plain failure."""
    state = RetryState(attempts=3, medium_retries=2, medium_since=NOW - 7200)
    decision = decide_after_error(MediumNotReadyError("not ready"), state, RETRY, now=NOW, max_countdown_s=900)
    assert decision.verdict == "give_up_medium"


def test_medium_and_transient_budgets_are_independent() -> None:
    """Waiting for a medium does not consume the transient retry budget."""
    state = RetryState(attempts=5, medium_retries=3, medium_since=NOW)
    decision = decide_after_error(QuotaError("quota"), state, RETRY, now=NOW, max_countdown_s=900)
    assert decision.verdict == "retry"
    assert decision.state.transient_retries == 1
    assert decision.state.medium_retries == 3


def test_a_medium_answer_resets_the_transient_budget() -> None:
    """A blip early in a long medium wait does not make a single later blip fatal."""
    state = RetryState(attempts=4, transient_retries=2, transient_since=NOW - 7200, medium_since=NOW - 7000)
    after_medium = decide_after_error(MediumNotReadyError("not ready"), state, RETRY, now=NOW, max_countdown_s=900)
    assert after_medium.state.transient_retries == 0 and after_medium.state.transient_since is None
    blip = decide_after_error(QuotaError("quota"), after_medium.state, RETRY, now=NOW + 600, max_countdown_s=900)
    assert blip.verdict == "retry"
