"""Carry out a delivery's plan: publish its outcomes, then ack, re-queue or drop the message.

    result = run_delivery(delivery, deps, publisher, requeue)

The one rule this module keeps: no message is acked without its request's final outcome
recorded. A final outcome that cannot be written (the outcome Redis down past the publisher's
deadline) re-queues the message as it arrived, to try again after `retry.publish_requeue_s`;
so does an outcome store that cannot be read before an attempt. What counts as a store being
unreachable is `deps.unavailable` (RedisError in the worker: this module imports no store).
An unexpected exception anywhere becomes an `internal` final outcome naming only the
exception's type (its text can hold what it failed on). A lost `retrying` event is only a gap
in the live view and is logged, not retried.

`requeue` is the Celery edge (Task.retry with a countdown): it never returns. So is `park`: it
puts the message in its site's line for a provider slot (worker/stores/slots.py), then acks it;
without one (unit tests), a parked request is re-queued after `limits.slot_wait_max_s` instead.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, Protocol

from errors import InternalError
from worker.domain.outcomes import Outcome
from worker.usecase.delivery import handle_delivery, internal_failure_plan
from worker.usecase.plan import Drop, Park, Plan, Requeue
from worker.usecase.ports import Delivery, DeliveryDeps
from worker.usecase.untrusted import task_id_for

__all__ = ["OutcomeSink", "Parker", "Requeuer", "StateReporter", "run_delivery"]

log = logging.getLogger(__name__)


class OutcomeSink(Protocol):
    def publish(self, outcome: Outcome, *, message_key: str | None = None) -> bool: ...


Requeuer = Callable[[Mapping[str, Any], float], NoReturn]
Parker = Callable[[Park], NoReturn]
# Tells monitors what a re-queued request waits for (worker.task_states.report_state).
StateReporter = Callable[[str, str], object]


class _FinalNotPublishedError(Exception):
    """The outcome store is unreachable: no final can be recorded now."""


def run_delivery(
    delivery: Delivery,
    deps: DeliveryDeps,
    outcomes: OutcomeSink,
    requeue: Requeuer,
    *,
    control_flow: tuple[type[BaseException], ...] = (),
    report_state: StateReporter | None = None,
    park: Parker | None = None,
) -> dict[str, Any]:
    """Plan and execute one delivery; returns a summary for the task's result (Flower shows it).

    `control_flow` exceptions (Celery's Retry/Reject) pass through untouched.
    """
    # Capped by the longest countdown the broker allows (config: retry.publish_requeue_s).
    later_s = min(deps.settings.retry.publish_requeue_s, float(deps.settings.limits.max_countdown_s))
    try_later: tuple[type[BaseException], ...] = (_FinalNotPublishedError, *deps.unavailable, *deps.interruptions)
    try:
        return _execute(
            handle_delivery(delivery, deps),
            outcomes,
            requeue,
            deps,
            delivery=delivery,
            report_state=report_state,
            park=park,
        )
    except control_flow:
        raise
    except try_later as exc:
        # Acking now would lose the request's only record: try again from the state it arrived with
        # (the invoke fence keeps a repeated attempt from refreshing twice).
        log.warning("final outcome not published (%s): request re-queued in %ss", _cause(exc, deps), later_s)
        requeue(delivery.kwargs, later_s)
    except Exception as exc:
        log.error(
            "internal error (%s) in the refresh use case; traceback without messages:\n%s",
            type(exc).__name__,
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        try:
            _execute(
                internal_failure_plan(delivery, exc, deps),
                outcomes,
                requeue,
                deps,
                delivery=delivery,
                report_state=report_state,
            )
        except _FinalNotPublishedError:
            requeue(delivery.kwargs, later_s)
        # Celery marks the task failed (Flower shows it); the outcome is already recorded.
        raise InternalError(f"internal error: {type(exc).__name__}") from None


def _execute(
    plan: Plan,
    outcomes: OutcomeSink,
    requeue: Requeuer,
    deps: DeliveryDeps,
    *,
    delivery: Delivery,
    report_state: StateReporter | None,
    park: Parker | None = None,
) -> dict[str, Any]:
    summary: dict[str, Any] = {"request_id": plan.request_id}
    for outcome in plan.outcomes:
        try:
            outcomes.publish(outcome, message_key=plan.message_key)
        except deps.unavailable as exc:
            if outcome.final:
                raise _FinalNotPublishedError from exc
            log.warning("retrying event for %s not published: %s", outcome.request_id, type(exc).__name__)
            continue
        _after_final(plan, outcome, deps)
        _after_event(outcome, deps)
        # What Celery logs and Flower shows as the task's result: short, and nothing a producer sent.
        summary = {
            "request_id": outcome.request_id,
            "status": outcome.status,
            "attempt": outcome.attempt,
            "error": outcome.error["kind"] if outcome.error else None,
        }
    then = plan.then
    if isinstance(then, Requeue):
        if plan.request_id is not None:
            # The next message is due after its countdown, or after the visibility timeout if a
            # worker holding it dies; past that plus a margin, the watch sends it again.
            limits = deps.settings.limits
            due_s = then.countdown_s + limits.visibility_timeout_s + limits.watch_margin_s
            task_id = task_id_for(delivery, plan.request_id)
            deps.watch.expect(plan.request_id, task_id, then.kwargs, within_s=due_s)
        if then.state is not None and report_state is not None:
            report_state(then.state, then.detail)
        requeue(then.kwargs, then.countdown_s)
    if isinstance(then, Park):
        limits = deps.settings.limits
        if plan.request_id is not None:
            # Woken when a slot frees; if its wake were lost (and the sweep too), the watch sends it.
            due_s = limits.slot_lease_s + limits.visibility_timeout_s + limits.watch_margin_s
            deps.watch.expect(plan.request_id, task_id_for(delivery, plan.request_id), then.kwargs, within_s=due_s)
        if then.state is not None and report_state is not None:
            report_state(then.state, then.detail)
        if park is None:
            requeue(then.kwargs, limits.slot_wait_max_s)
        park(then)
    if isinstance(then, Drop):
        log.info("request %s %s", plan.request_id, then.reason)
        if plan.recorded_final is not None:
            _after_final(plan, plan.recorded_final, deps)
        return {"request_id": plan.request_id, "already_final": True}
    return summary


def _after_final(plan: Plan, outcome: Outcome, deps: DeliveryDeps) -> None:
    """What follows a final outcome being recorded: its bulk counts it; a leader forgets a follower.

    The final is recorded whatever happens here: a bug (or an outcome no bookkeeping expected) is
    logged, never turned into a second final. Only an unreachable store (`deps.unavailable`) passes,
    so the message
    comes back and its redelivery tells the bulk again (`Plan.recorded_final`).
    """
    if not outcome.final:
        return
    try:
        deps.on_final(outcome)
        if plan.followers_of is not None and outcome.joined_request_id is not None:
            deps.coalescer.ack_follower(plan.followers_of, outcome.request_id)
    except deps.unavailable:
        raise
    except Exception as exc:
        # The type only: an exception's text may hold what a hostile message carried.
        log.error(
            "bookkeeping after the final outcome of %s failed (%s); the outcome stands",
            outcome.request_id,
            type(exc).__name__,
        )


def _after_event(outcome: Outcome, deps: DeliveryDeps) -> None:
    """A non-final event told to whoever follows them (a bulk: its followed children); never raises.

    Nothing depends on it being told: the next event tells again, and the final counts the child
    whether or not any event was told.
    """
    if outcome.final or deps.on_event is None:
        return
    try:
        deps.on_event(outcome)
    except Exception as exc:
        log.warning("bookkeeping after an event of %s failed (%s)", outcome.request_id, type(exc).__name__)


def _cause(exc: BaseException, deps: DeliveryDeps) -> str:
    if isinstance(exc, _FinalNotPublishedError):
        return f"outcome Redis unavailable: {type(exc.__cause__).__name__}"
    if isinstance(exc, deps.unavailable):
        return f"outcome Redis unavailable: {type(exc).__name__}"
    return "time limit"
