"""Retry policy as data: backoff shape, caps, jitter bounds and exhaustion."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.settings import RetryPolicy
from errors import ConnectError, NotFoundError
from worker.domain.deadline import Deadline
from worker.retry import backoff_s, in_call_retrying, is_exhausted, next_delay_s

POLICY = RetryPolicy(max_attempts=5, initial_backoff_s=1.0, max_backoff_s=10.0, multiplier=2.0, jitter=0.0)


def test_backoff_grows_exponentially_until_the_cap() -> None:
    """Without jitter, delays double from the initial backoff and stop at the cap."""
    assert [backoff_s(POLICY, n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 10.0]


@given(retry_number=st.integers(min_value=1, max_value=60), r=st.floats(min_value=0.0, max_value=1.0))
def test_jittered_backoff_stays_between_the_unjittered_floor_and_the_cap(retry_number: int, r: float) -> None:
    """A jittered delay never exceeds the cap nor drops below (1 - jitter) of the raw delay."""
    policy = RetryPolicy(max_attempts=100, initial_backoff_s=0.5, max_backoff_s=30.0, jitter=0.3)
    delay = backoff_s(policy, retry_number, rand=lambda: r)
    capped = min(0.5 * 2 ** (retry_number - 1), 30.0)
    assert capped * 0.7 - 1e-9 <= delay <= capped + 1e-9


def test_policy_is_exhausted_by_attempts_or_by_deadline() -> None:
    """Either the attempt budget or the deadline ends the retrying."""
    timed = RetryPolicy(max_attempts=100, initial_backoff_s=1, max_backoff_s=1, deadline_s=60)
    assert is_exhausted(POLICY, 5, 0.0)
    assert not is_exhausted(POLICY, 4, 1e9)
    assert is_exhausted(timed, 1, 60.0)
    assert not is_exhausted(timed, 1, 59.0)


def test_last_delay_is_shortened_to_land_on_the_deadline() -> None:
    """A delay that would overshoot the deadline is cut so one last attempt happens at it."""
    policy = RetryPolicy(max_attempts=100, initial_backoff_s=50, max_backoff_s=50, jitter=0.0, deadline_s=60)
    assert next_delay_s(policy, 1, 30.0) == pytest.approx(30.0)
    assert next_delay_s(policy, 1, 60.0) is None


def test_policy_rejects_a_cap_below_the_initial_backoff() -> None:
    """An inconsistent policy is a configuration error, caught when settings load."""
    with pytest.raises(ValueError, match="max_backoff_s"):
        RetryPolicy(max_attempts=3, initial_backoff_s=10, max_backoff_s=1)


def test_in_call_retrying_retries_transient_errors_and_then_reraises() -> None:
    """Transient errors are retried up to max_attempts, then the last one propagates."""
    calls: list[int] = []
    resets: list[str] = []

    def flaky() -> None:
        calls.append(1)
        raise ConnectError("connection reset")

    retrying = in_call_retrying(
        RetryPolicy(max_attempts=3, initial_backoff_s=0.0, max_backoff_s=0.0),
        before_retry=lambda exc: resets.append(type(exc).__name__),
        sleep=lambda _s: None,
    )
    with pytest.raises(ConnectError):
        retrying(flaky)
    assert len(calls) == 3
    assert resets == ["ConnectError", "ConnectError"]


def test_in_call_retrying_never_retries_permanent_errors() -> None:
    """A permanent error (not found) surfaces after exactly one call."""
    calls: list[int] = []

    def missing() -> None:
        calls.append(1)
        raise NotFoundError("no such package")

    retrying = in_call_retrying(POLICY, sleep=lambda _s: None)
    with pytest.raises(NotFoundError):
        retrying(missing)
    assert calls == [1]


def test_an_in_call_retry_that_would_not_fit_before_the_deadline_is_not_made() -> None:
    """Three tries allowed, 2 s apart, 3 s left: one retry fits, the next does not; the error surfaces."""
    now = [0.0]
    calls: list[float] = []

    def refused() -> None:
        calls.append(now[0])
        raise ConnectError("connection refused")

    def sleep(seconds: float) -> None:
        now[0] += seconds

    policy = RetryPolicy(max_attempts=5, initial_backoff_s=2.0, max_backoff_s=2.0, multiplier=1.0, jitter=0.0)
    retrying = in_call_retrying(policy, sleep=sleep, deadline=Deadline(3.0, lambda: now[0]))
    with pytest.raises(ConnectError):
        retrying(refused)
    assert calls == [0.0, 2.0]
