"""What to do after a failed attempt: a pure function of the error, the state and the policies.

    transient error      -> re-queue under the `transient` policy, or fail when it is exhausted
    medium not ready     -> re-queue under the `medium` policy, or give up (gave_up_medium_not_ready)
    permanent error      -> fail at once

Waits longer than `max_countdown_s` are split: the message is re-queued with the capped
countdown and `not_before` set, so no countdown outlives the broker's visibility timeout
(an ETA beyond it is redelivered again and again: kombu #337).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from config.settings import RetrySettings
from errors import MediumNotReadyError, RefreshError
from worker.domain.request import RetryState
from worker.retry import next_delay_s

__all__ = ["Decision", "decide_after_error", "wake_early"]

Verdict = Literal["retry", "fail", "give_up_medium"]


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    state: RetryState
    countdown_s: float = 0.0  # capped, what the broker is asked to wait
    wait_s: float = 0.0  # the full wait the policy asked for
    retry_at: float | None = None  # epoch seconds of the next real attempt


def decide_after_error(
    error: RefreshError,
    state: RetryState,
    retry: RetrySettings,
    *,
    now: float,
    max_countdown_s: float,
    rand: Callable[[], float] = random.random,
) -> Decision:
    """The verdict after attempt number `state.attempts` failed with `error`."""
    if isinstance(error, MediumNotReadyError):
        since = state.medium_since if state.medium_since is not None else now
        made = state.medium_retries + 1
        delay = next_delay_s(retry.medium, made, now - since, rand=rand)
        if delay is None:
            return Decision("give_up_medium", state.evolve(medium_since=since))
        # The provider answered: whatever transient trouble came before is over, so a blip
        # hours into a medium wait gets a fresh transient budget.
        new_state = state.evolve(medium_retries=made, medium_since=since, transient_retries=0, transient_since=None)
    elif error.retryable:
        since = state.transient_since if state.transient_since is not None else now
        made = state.transient_retries + 1
        delay = next_delay_s(retry.transient, made, now - since, rand=rand)
        if delay is None:
            return Decision("fail", state.evolve(transient_since=since))
        new_state = state.evolve(transient_retries=made, transient_since=since)
    else:
        return Decision("fail", state)
    retry_at = now + delay
    countdown = min(delay, max_countdown_s)
    return Decision(
        "retry",
        new_state.evolve(not_before=retry_at if delay > max_countdown_s else None),
        countdown_s=countdown,
        wait_s=delay,
        retry_at=retry_at,
    )


def wake_early(state: RetryState, *, now: float, max_countdown_s: float) -> float | None:
    """If this run woke before `not_before`, the next countdown; None when it is time to work."""
    if state.not_before is None or now >= state.not_before:
        return None
    return min(state.not_before - now, max_countdown_s)
