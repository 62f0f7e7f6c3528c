"""Retry policy as data -> delays (pure) and tenacity controllers (thin).

`backoff_s` is the one formula: capped exponential with a jittered share, so a fleet of
workers retrying the same provider spreads out instead of arriving in lock-step.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_after_delay
from tenacity.stop import stop_base

from config.settings import RetryPolicy
from errors import RefreshError
from worker.domain.deadline import Deadline

__all__ = ["backoff_s", "in_call_retrying", "is_exhausted", "next_delay_s"]

T = TypeVar("T")


def backoff_s(policy: RetryPolicy, retry_number: int, *, rand: Callable[[], float] = random.random) -> float:
    """Delay before retry number `retry_number` (1 = the first retry): capped, jittered."""
    if retry_number < 1:
        raise ValueError("retry_number starts at 1")
    raw = policy.initial_backoff_s * policy.multiplier ** (retry_number - 1)
    capped = min(raw, policy.max_backoff_s)
    # The jittered share is drawn in [0, share]: delays never exceed the cap.
    return capped * (1.0 - policy.jitter) + capped * policy.jitter * rand()


def is_exhausted(policy: RetryPolicy, attempts_made: int, elapsed_s: float) -> bool:
    """True when no further attempt is allowed after `attempts_made` attempts over `elapsed_s`."""
    if attempts_made >= policy.max_attempts:
        return True
    return policy.deadline_s is not None and elapsed_s >= policy.deadline_s


def next_delay_s(
    policy: RetryPolicy,
    attempts_made: int,
    elapsed_s: float,
    *,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """The wait before the next attempt, or None when the policy is exhausted.

    A delay that would end past the deadline is shortened to land on it, so the last attempt
    happens at the deadline rather than never.
    """
    if is_exhausted(policy, attempts_made, elapsed_s):
        return None
    delay = backoff_s(policy, attempts_made, rand=rand)
    if policy.deadline_s is not None:
        delay = max(0.0, min(delay, policy.deadline_s - elapsed_s))
    return delay


class _StopBeforeDeadline(stop_base):
    """Stop when the pause before the next try would reach the deadline: that try could not run."""

    def __init__(self, deadline: Deadline, wait: Callable[[RetryCallState], float]) -> None:
        self._deadline = deadline
        self._wait = wait

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._deadline.remaining_s() <= self._wait(retry_state)


def in_call_retrying(
    policy: RetryPolicy,
    *,
    before_retry: Callable[[BaseException], None] | None = None,
    sleep: Callable[[float], None] | None = None,
    deadline: Deadline | None = None,
) -> Retrying:
    """A tenacity controller for short in-call retries of transient `RefreshError`s only.

    With a `deadline`, no retry starts unless its pause ends before it.
    """

    def _wait(state: RetryCallState) -> float:
        return backoff_s(policy, state.attempt_number)

    def _before_sleep(state: RetryCallState) -> None:
        if before_retry is not None and state.outcome is not None:
            exc = state.outcome.exception()
            if exc is not None:
                before_retry(exc)

    stop: stop_base = stop_after_attempt(policy.max_attempts)
    if policy.deadline_s is not None:
        stop = stop | stop_after_delay(policy.deadline_s)
    if deadline is not None:
        stop = stop | _StopBeforeDeadline(deadline, _wait)
    retrying = Retrying(
        stop=stop,
        wait=_wait,
        retry=retry_if_exception(lambda exc: isinstance(exc, RefreshError) and exc.retryable),
        before_sleep=_before_sleep,
        reraise=True,
    )
    if sleep is not None:
        retrying.sleep = sleep
    return retrying
