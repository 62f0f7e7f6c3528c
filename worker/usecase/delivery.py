"""The refresh use case: what to do with one delivery of `sccm.refresh_package`.

    plan = handle_delivery(delivery, deps)

No Celery here and no I/O of its own: the collaborators (the provider client, the final-outcome
lookup, the invoke fences, the clock, the settings) come in `deps`, and the answer is a `Plan`:
the outcomes to publish, in order, then what becomes of the message:

    Done                 ack it: the request has its final outcome (in `outcomes`)
    Requeue(countdown_s) re-queue it with a countdown; the retry state travels in its kwargs
    Drop                 ack it without publishing: a redelivery of a request that already ended

`worker/usecase/execute.py` carries a plan out (and turns an unexpected exception into an `internal`
final outcome); the Celery task in tasks/refresh.py only hands it the message.

The delivery goes through `STEPS` in order; each step either decides (returns a Plan) or fills
in the context and passes (returns None):

    admit          validate the message                         -> rejected
    redelivery     the request already ended                    -> Drop (and any unpublished joined finals)
    wake_early     a long wait split into hops                  -> Requeue, no provider call
    follow         an accepted request followed to every DP     -> distributing + Requeue, or its final
                   (redistribute_failed: RefreshNow on failed DPs, worker/usecase/redistribute.py)
    bulk_child     a child of a cancelled bulk, never attempted -> cancelled
    coalesce       a refresh of the package is already pending  -> join it: Requeue as its watcher
                   (not with until=distributed: it refreshes on its own, to follow its own V0 -> V1)
    exclusive      another copy of this message is attempting   -> Requeue until it is done
                   (the lock and the fence in one round trip, before the slot: not spent holding it)
    provider_slot  the site's concurrency cap is reached        -> Park: in line, woken by the release
                   (the lock given back first)
    attempt        Get, fence, Invoke, verify                   -> the success, with its followers' finals
                   (until=distributed: V0 and the DPs recorded  -> distributing + Requeue)
    decide         after a failed attempt                       -> retrying + Requeue, or the failure

Adding a concern is adding one function there.

Keying: a valid request is known by its `request_id` (default: the task id); a message that
cannot be trusted is named as worker/usecase/untrusted.py says. What comes in and the
collaborators are in worker/usecase/ports.py, the plan types in worker/usecase/plan.py, the
values shared with the stores in worker/usecase/values.py.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from config.settings import Settings
from errors import (
    AttemptSupersededError,
    ConfigError,
    InternalError,
    InvalidRequestError,
    MediumNotReadyError,
    OperationTimeoutError,
    RefreshError,
)
from worker.domain.deadline import Deadline
from worker.domain.follow import FollowStep
from worker.domain.follow_report import distribution_block
from worker.domain.ids import claimed_bulk
from worker.domain.outcomes import (
    STATUS_DISTRIBUTING,
    AttemptInfo,
    Outcome,
    RequestInfo,
    format_timestamp,
    parse_timestamp,
)
from worker.domain.packages import ONE_AT_A_TIME_CLASSES, PackageInfo
from worker.domain.request import (
    RETRY_STATE_KWARG,
    UNTIL_DISTRIBUTED,
    UNTIL_SOURCE_UPDATED,
    RefreshRequest,
    RetryState,
    is_valid_id,
    parse_request,
)
from worker.usecase.attempt import attempt_refresh
from worker.usecase.decide import decide_after_error, wake_early
from worker.usecase.follow import DirectReader, DistributionReader, FollowClient, poll, start_following
from worker.usecase.plan import Done, Drop, Park, Plan, Requeue
from worker.usecase.ports import Delivery, DeliveryDeps, Fences
from worker.usecase.redistribute import RedistributeClient, Redistributor
from worker.usecase.untrusted import message_key, task_id_for, trusted_task_id, untrusted_info
from worker.usecase.values import (
    FOLLOWING_TO_DPS,
    JOINED,
    PRIORITY_FOLLOW_UP,
    PRIORITY_PATIENT,
    PRIORITY_SINGLE,
    WAITING_FOR_MEDIUM,
    WAITING_FOR_SLOT,
    BulkNotFoundError,
    FenceSnapshot,
    Follower,
    Granted,
    Leader,
    Lease,
    woken_ahead,
)

__all__ = ["STEPS", "handle_delivery", "internal_failure_plan", "reject_delivery"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
# How long a request woken ahead of its slot waits for it in its thread before parking again:
# a few hold times of a busy provider, and within the Redis client's socket timeout.
_WOKEN_AHEAD_WAIT_S = 4.0
# The longest a second copy of a request waits before looking at the first copy's attempt lock again.
_LOCK_RECHECK_S = 2.0
# The longest a request of a one-at-a-time class (boot images: a lane of one, polled, not parked)
# waits before looking at its lane again. The estimate from the lane's hold times assumes 30 s before
# the first release and grows with the place in line (up to a minute); a look costs one round trip,
# and a guessed wait, when the lane freed long before, was a request's lateness (chaos: 30 + 25 s).
_LANE_RECHECK_S = 5.0


# -- the steps ----------------------------------------------------------------------------------


@dataclass
class _Seen:
    """What the attempt learned about the package before it failed (for outcomes and retries)."""

    name: str | None = None
    version_before: int | None = None

    def record(self, package: PackageInfo) -> None:
        self.name = package.name
        if self.version_before is None:
            self.version_before = package.source_version


@dataclass
class _Context:
    delivery: Delivery
    started_at: float
    started_mono: float
    request: RefreshRequest | None = None
    request_id: str = ""
    state: RetryState = field(default_factory=RetryState)
    seen: _Seen = field(default_factory=_Seen)
    error: RefreshError | None = None
    lease: Lease | None = None
    # The one slot of a class refreshed one at a time per site (a boot image), held with `lease`.
    lane_lease: Lease | None = None
    lock: str | None = None
    leads: bool = False
    # Set by `bulk_child` when the bulk's record lists this request as an outstanding child.
    bulk_id: str | None = None
    # The provider_slot step ran: from there on, every path gives back what the delivery holds.
    slot_step_ran: bool = False

    @property
    def valid(self) -> RefreshRequest:
        assert self.request is not None, "a step after admit needs the validated request"
        return self.request


Step = Callable[[_Context, DeliveryDeps], Plan | None]


def handle_delivery(delivery: Delivery, deps: DeliveryDeps) -> Plan:
    """The plan for this delivery (see the module docstring)."""
    ctx = _Context(delivery, started_at=deps.clock.time(), started_mono=deps.clock.monotonic())
    for step in STEPS:
        plan = step(ctx, deps)
        if plan is not None:
            _leave_woken_slot(ctx, deps)
            return plan
    raise AssertionError("the last step always decides")  # pragma: no cover


def _leave_woken_slot(ctx: _Context, deps: DeliveryDeps) -> None:
    """A woken request that ended (or waits again) before taking its slot gives the slot back now.

    The release that woke it granted it a slot; left held, that slot would idle until its lease
    lapsed and the sweep woke the request again (a cancelled bulk's children would each do so).
    """
    if ctx.request is None or ctx.state.parked_at is None or ctx.slot_step_ran:
        return
    deps.slots.leave(ctx.request.site_code, ctx.request_id)


def _admit(ctx: _Context, deps: DeliveryDeps) -> Plan | None:
    """Validate the message; anything wrong with it is a `rejected` final outcome."""
    delivery = ctx.delivery
    kwargs = dict(delivery.kwargs)
    raw_state = kwargs.pop(RETRY_STATE_KWARG, None)
    try:
        if delivery.args:
            raise InvalidRequestError("positional arguments are not accepted: send kwargs")
        request = parse_request(kwargs)
        if request.is_task_sequence and not request.force:
            raise InvalidRequestError(
                "refusing RefreshPkgSource on SMS_TaskSequencePackage: Microsoft warns it renders the task "
                "sequence inoperable; send force=true to override"
            )
        deps.settings.provider(request.site_code)  # unknown site -> ConfigError before any attempt
    except (InvalidRequestError, ConfigError) as exc:
        return _rejection(ctx, deps, exc)
    ctx.request = request
    ctx.request_id = request.request_id or trusted_task_id(delivery.task_id) or message_key(delivery)
    now = ctx.started_at
    state = RetryState.from_kwargs(raw_state, now=now, max_wait_s=_longest_wait_s(deps.settings))
    if state.requested_at is None:
        asked = request.requested_at.timestamp() if request.requested_at is not None else now
        # A producer clock ahead of ours must not put requested_at after the attempt started.
        state = state.evolve(requested_at=min(asked, now), first_attempt_at=now)
    ctx.state = state
    # Until this delivery ends (its time limit), or its message returns after a worker died.
    limits = deps.settings.limits
    due_s = deps.settings.task_time_limit_s + limits.visibility_timeout_s + limits.watch_margin_s
    deps.watch.expect(ctx.request_id, _task_id_of(ctx), _retry_kwargs(ctx, state), within_s=due_s)
    return None


def _redelivery(ctx: _Context, deps: DeliveryDeps) -> Plan | None:
    """A message delivered again after its request ended has nothing left to do.

    Except when it led a coalesced refresh and died before its followers' finals were all
    published: those are published now, from its own final outcome. And a bulk's child is counted
    by its bulk again (the count is once per child): its worker may have died between publishing
    the final and counting it, and the bulk would wait for that child for ever.
    """
    if not deps.finals.final_recorded(ctx.request_id):
        return None
    # `admit` has just set a deadline for it; a sweep would send it again, and again, forever.
    deps.watch.forget(ctx.request_id)
    drop = Drop("already has its final outcome; redelivery dropped")
    # A bulk child's final may be recorded but not counted (the worker died in between, or a
    # request under the child's id ended before the bulk sent it): its bulk is told again.
    recount = claimed_bulk(ctx.request_id) is not None
    final = deps.finals.final_outcome(ctx.request_id)
    recorded = final if recount else None
    followers = deps.coalescer.pending_followers(ctx.request_id) if final else ()
    if final is None or not followers:
        return Plan(then=drop, request_id=ctx.request_id, recorded_final=recorded)
    joined = tuple(_joined_final(final, follower) for follower in followers)
    return Plan(joined, drop, request_id=ctx.request_id, followers_of=ctx.request_id, recorded_final=recorded)


def _wake_early(ctx: _Context, deps: DeliveryDeps) -> Plan | None:
    """Woken before the policy's wait is over (a long wait split into hops): sleep on."""
    early = wake_early(ctx.state, now=ctx.started_at, max_countdown_s=deps.settings.limits.max_countdown_s)
    if early is None:
        return None
    return Plan(then=Requeue(early, _retry_kwargs(ctx, ctx.state)), request_id=ctx.request_id)


def _follow(ctx: _Context, deps: DeliveryDeps) -> Plan | None:
    """An accepted request followed to every DP: one poll, then `distributing` and a re-queue, or its final.

    The attempt lock keeps two copies of the message from polling at once (one final either way:
    the outcome writer records only the first).
    """
    follow = ctx.state.follow
    if follow is None:
        return None
    limits = deps.settings.limits
    ctx.lock = deps.fences.try_lock(ctx.request_id, ttl_s=limits.attempt_lock_s)
    if ctx.lock is None:
        wait = Requeue(float(min(limits.attempt_lock_s, limits.max_countdown_s)), _retry_kwargs(ctx, ctx.state))
        return Plan(then=wait, request_id=ctx.request_id)
    try:
        step = poll(
            _distribution_reader(ctx, deps),
            _SlotGate(ctx, deps),
            ctx.valid,
            follow,
            now=deps.clock.time(),
            policy=deps.settings.follow,
            deadline=_attempt_deadline(ctx, deps),
            redistribute=_redistributor(ctx, deps),
        )
    finally:
        deps.fences.unlock(ctx.request_id, ctx.lock)
        ctx.lock = None
    return _following(ctx, deps, step)


def _start_following(ctx: _Context, deps: DeliveryDeps, v0: int) -> Plan:
    """Accepted with until=distributed: record V0 and the target DPs, tell `distributing`, wait for the first poll."""
    step = start_following(
        _distribution_reader(ctx, deps, own=True),
        _SlotGate(ctx, deps),
        ctx.valid,
        v0=v0,
        now=deps.clock.time(),
        policy=deps.settings.follow,
        deadline=_attempt_deadline(ctx, deps),
    )
    return _following(ctx, deps, step)


def _following(ctx: _Context, deps: DeliveryDeps, step: FollowStep) -> Plan:
    """The plan after a follow step: its final, or a `distributing` event (when the counts moved) and a re-queue."""
    policy, now = deps.settings.follow, deps.clock.time()
    block = distribution_block(
        step, max_rows=policy.max_dp_rows, now=now, policy=policy, redistributes=_redistributes(ctx, deps)
    )
    status = step.verdict if step.final else STATUS_DISTRIBUTING
    outcome = Outcome.following(
        _request_info(ctx),
        _run(ctx, deps),
        status,
        block,
        source_version_before=step.state.v0,
        source_version_after=step.state.v1,
    )
    if step.final:
        log.info("request %s followed to every DP: %s %s", ctx.request_id, step.verdict, step.counts)
        return Plan((outcome,), Done(), request_id=ctx.request_id)
    told = step.news
    if told:
        step = step.reported()
    assert step.next_poll_s is not None
    # A wait past the longest countdown is split into hops (wake_early), like a medium wait.
    countdown_s = min(step.next_poll_s, float(deps.settings.limits.max_countdown_s))
    not_before = now + step.next_poll_s if step.next_poll_s > countdown_s else None
    state = ctx.state.evolve(follow=step.state, not_before=not_before)
    counts = ", ".join(f"{n} {key}" for key, n in step.counts.items() if n)
    detail = f"following to every DP ({counts or 'targets not read yet'}); next poll {block['next_poll_at']}"
    requeue = Requeue(countdown_s, _retry_kwargs(ctx, state), state=FOLLOWING_TO_DPS, detail=detail)
    return Plan((outcome,) if told else (), requeue, request_id=ctx.request_id)


def _redistributes(ctx: _Context, deps: DeliveryDeps) -> bool:
    """Whether this followed request redistributes failed DPs: it asked, or its site is set to."""
    request = ctx.valid
    return request.redistribute_failed or deps.settings.provider(request.site_code).redistribute_failed


def _redistributor(ctx: _Context, deps: DeliveryDeps) -> Redistributor | None:
    """The poll's redistribution (worker/usecase/redistribute.py), when this request redistributes."""
    if deps.redistributions is None or not _redistributes(ctx, deps):
        return None
    client = deps.provider(ctx.valid.site_code)
    if not isinstance(client, RedistributeClient):
        raise InternalError(f"the provider client of {ctx.valid.site_code} cannot send RefreshNow")
    return Redistributor(
        client,
        deps.redistributions,
        _SlotGate(ctx, deps),
        ctx.valid,
        policy=deps.settings.follow,
        deadline=_attempt_deadline(ctx, deps),
    )


def _distribution_reader(ctx: _Context, deps: DeliveryDeps, *, own: bool = False) -> DistributionReader:
    """The site's shared reader, or (`own`, or none configured) the request's own reads.

    The targets are read as the request is accepted, by the request itself: a per-site snapshot
    would answer with rows read up to an interval before the refresh, or not at all.
    """
    site_code = ctx.valid.site_code
    if deps.distribution is not None and not own:
        return deps.distribution(site_code)
    client = deps.provider(site_code)
    if not isinstance(client, FollowClient):
        raise InternalError(f"the provider client of {site_code} cannot read DP status")
    return DirectReader(client)


def _bulk_child(ctx: _Context, deps: DeliveryDeps) -> Plan | None:
    """A bulk's child says it is alive; a child of a cancelled bulk that never ran ends `cancelled`.

    Only a request its bulk's record lists (outstanding) is a child. One that merely looks like
    a child, or names a bulk as its correlation id, is an ordinary request.
    """
    bulk_id = claimed_bulk(ctx.request_id)
    if bulk_id is None:
        return None
    try:
        checkin = deps.bulks.child_checkin(bulk_id, ctx.request_id)
    except BulkNotFoundError:
        return None  # no such bulk (never was, or expired)
    if not checkin.outstanding:
        return None
    ctx.bulk_id = bulk_id
    if ctx.state.attempts > 0 or not checkin.cancelled:
        return None
    request = ctx.valid
    if deps.coalescer.current_leader(request.site_code, request.package_id) == ctx.request_id:
        # Other requests joined this child's pending refresh: cancelling it would strand them.
        return None
    outcome = Outcome.cancelled(_request_info(ctx), _run(ctx, deps))
    return Plan((outcome,), Done(), request_id=ctx.request_id)


def _coalesce(ctx: _Context, deps: DeliveryDeps) -> Plan | None:
    """Join the package's pending refresh instead of refreshing again (until it is accepted).

    A joined request's final outcome is published by the request it joined, when that one ends.
    Meanwhile its message waits as a watcher: it wakes every `max_countdown_s`, and if the
    leader vanished (its marker expired: a worker died and its message was lost) it claims
    again, leading or joining whoever leads now. Nothing waits forever.
    """
    request, limits = ctx.valid, deps.settings.limits
    if request.follow_until == UNTIL_DISTRIBUTED:
        return None  # a joined request would end with its leader's final: this one follows its own refresh
    claim = deps.coalescer.claim(
        request.site_code,
        request.package_id,
        ctx.request_id,
        _follower_info(ctx),
        ttl_s=float(limits.visibility_timeout_s + limits.max_countdown_s),
    )
    if isinstance(claim, Leader):
        ctx.leads = True
        return None
    log.info("request %s joined the pending refresh %s", ctx.request_id, claim.leader_request_id)
    watch = Requeue(
        float(limits.max_countdown_s),
        _retry_kwargs(ctx, ctx.state),
        state=JOINED,
        detail=f"joined the pending refresh {claim.leader_request_id}: its outcome will be this one's",
    )
    return Plan(then=watch, request_id=ctx.request_id)


def _provider_slot(ctx: _Context, deps: DeliveryDeps) -> Plan | None:
    """Take one of the site's provider slots, or park in the site's line (no thread held, no polling).

    A class refreshed one at a time (a boot image) first takes its lane's only slot at the site;
    the lane's line is polled (a woken boot image would otherwise hold a site slot while waiting).
    The attempt lock taken before is given back on every way out but the attempt's.
    """
    try:
        return _take_provider_slot(ctx, deps)
    except BaseException:
        # Held past here, this process would renew it until the task time limit.
        _unlock(ctx, deps)
        raise


def _take_provider_slot(ctx: _Context, deps: DeliveryDeps) -> Plan | None:
    ctx.slot_step_ran = True
    request = ctx.valid
    limit = deps.settings.provider(request.site_code).max_concurrency
    patient = ctx.bulk_id is not None or ctx.state.medium_retries > 0
    priority = PRIORITY_PATIENT if patient else PRIORITY_SINGLE
    if request.package_class in ONE_AT_A_TIME_CLASSES:
        lane = deps.slots.try_acquire(
            request.site_code, ctx.request_id, 1, priority=priority, lane=request.package_class
        )
        if not isinstance(lane, Granted):
            if ctx.state.parked_at is not None:
                deps.slots.leave(request.site_code, ctx.request_id)
            detail = (
                f"{request.package_class} refreshes one at a time at {request.site_code}: place {lane.rank + 1} "
                f"in line, next look in {min(lane.retry_after_s, _LANE_RECHECK_S):.1f}s"
            )
            look_again_s = min(lane.retry_after_s, _LANE_RECHECK_S)
            wait = Requeue(look_again_s, _retry_kwargs(ctx, ctx.state), state=WAITING_FOR_SLOT, detail=detail)
            _unlock(ctx, deps)
            return Plan(then=wait, request_id=ctx.request_id)
        ctx.lane_lease = lane.lease
    answer = deps.slots.try_acquire(request.site_code, ctx.request_id, limit, priority=priority, join=False)
    if isinstance(answer, Granted):
        ctx.lease = answer.lease
        return None
    if ctx.state.parked_at is not None and answer.rank < woken_ahead(limit):
        # Woken ahead of its slot (worker/stores/slots.py): the next release hands it over at once.
        granted = deps.slots.await_woken_slot(
            request.site_code, ctx.request_id, limit, priority=priority, timeout_s=_WOKEN_AHEAD_WAIT_S
        )
        if granted is not None:
            ctx.lease = granted.lease
            return None
    _release_slots(ctx, deps)
    _unlock(ctx, deps)
    detail = (
        f"in line for {request.site_code}'s provider ({answer.in_use} of {limit} slots in use, "
        f"{answer.waiting} waiting): woken when a slot frees"
    )
    park = Park(
        _retry_kwargs(ctx, ctx.state, parking=True),
        request.site_code,
        ctx.request_id,
        priority,
        limit,
        state=WAITING_FOR_SLOT,
        detail=detail,
    )
    return Plan(then=park, request_id=ctx.request_id)


def _exclusive(ctx: _Context, deps: DeliveryDeps) -> Plan | None:
    """Only one delivery of a request attempts it at a time; a second copy waits for the first."""
    ttl_s = deps.settings.limits.attempt_lock_s
    ctx.lock = deps.fences.try_lock(ctx.request_id, ttl_s=ttl_s)
    if ctx.lock is not None:
        return None
    _release_slots(ctx, deps)
    # Back when the holder's lock lapses (a frozen holder stops renewing it; a second past it so
    # the lock is surely gone), and at the latest after _LOCK_RECHECK_S: a live holder usually lets
    # go within milliseconds (it parks for a slot, re-queues, ends), and a copy that waited out the
    # whole lock (up to 20 s) each time two copies met added that to the request's lateness (the
    # chaos suite's redis-maxmemory, whose refused re-queues leave copies behind).
    wait_s = min(
        deps.fences.lock_left_s(ctx.request_id) + 1.0,
        _LOCK_RECHECK_S,
        float(ttl_s),
        deps.settings.limits.max_countdown_s,
    )
    log.info(
        "request %s is being attempted by another delivery; this one looks again in %.1f s", ctx.request_id, wait_s
    )
    wait = Requeue(wait_s, _retry_kwargs(ctx, ctx.state))
    return Plan(then=wait, request_id=ctx.request_id)


def _attempt(ctx: _Context, deps: DeliveryDeps) -> Plan | None:
    """Get, fence, Invoke, verify. Success decides; an error is left for `_decide`."""
    request, limits = ctx.valid, deps.settings.limits
    ctx.state = ctx.state.evolve(attempts=ctx.state.attempts + 1, not_before=None)
    ctx.seen = _Seen(name=ctx.state.package_name, version_before=ctx.state.source_version_before)
    request_id = ctx.request_id
    hint = request.package_hint
    gate = _SlotGate(ctx, deps)
    try:
        result = attempt_refresh(
            deps.provider(request.site_code),
            request.package_class,
            request.package_id,
            verify_timeout_s=limits.verify_timeout_s if request.follow_until == UNTIL_SOURCE_UPDATED else 0.0,
            verify_poll_s=limits.verify_poll_s,
            known_version_before=ctx.state.source_version_before,
            on_package=ctx.seen.record,
            known_package=hint.package(request.package_class, request.package_id) if hint else None,
            fence=_BoundFence(deps.fences, request_id),
            invoke_retry=deps.settings.retry.in_call,
            gate=gate,
            sleep=deps.sleep,
            clock=deps.clock.monotonic,
            wall_clock=deps.clock.time,
            deadline=_attempt_deadline(ctx, deps),
        )
    except RefreshError as exc:
        ctx.error = exc
        return None
    except AttemptSupersededError:
        log.warning("request %s: this attempt stalled past its lock; the delivery holding it now goes on", request_id)
        return Plan(then=Drop("superseded by a delivery that took the lapsed attempt lock"), request_id=request_id)
    except deps.interruptions:
        ctx.error = OperationTimeoutError("task soft time limit reached during the WS-Man exchange")
        return None
    finally:
        # Each given back on its own: a store that fails one (Redis away) must not keep the other
        # held, least of all the attempt lock, which this process would otherwise renew on and on.
        try:
            _release_slots(ctx, deps)
        finally:
            if ctx.lock is not None:
                deps.fences.unlock(request_id, ctx.lock)
    if result.confirmed_earlier_invoke:
        log.info("request %s: an earlier RefreshPkgSource had landed; not invoking again", request_id)
    ctx.seen.name = result.package.name
    if request.follow_until == UNTIL_DISTRIBUTED:
        if result.source_version_before is not None:
            return _start_following(ctx, deps, result.source_version_before)
        log.warning("request %s: the package reports no SourceVersion, so it cannot be followed to its DPs", request_id)
    outcome = Outcome.succeeded(
        _request_info(ctx),
        _run(ctx, deps),
        source_version_before=result.source_version_before,
        source_version_after=result.source_version_after,
    )
    return _ending(ctx, deps, outcome)


def _attempt_deadline(ctx: _Context, deps: DeliveryDeps) -> Deadline:
    """The attempt ends by the soft time limit, counted from the delivery's start.

    Celery's threads pool enforces no time limit, so this is what does: no provider call, in-call
    retry or verification wait runs past it. The final's publication that follows has its own
    bound (`limits.publish_deadline_s`); soft limit plus that stay within the hard limit by default
    (300 + 60 = 360 s), which the request watch's deadlines count on.
    """
    return Deadline(ctx.started_mono + deps.settings.task_soft_time_limit_s, deps.clock.monotonic)


def _decide(ctx: _Context, deps: DeliveryDeps) -> Plan:
    """After a failed attempt: a retrying event and a re-queue, or the final failure."""
    error = ctx.error
    assert error is not None, "_decide runs only after a failed attempt"
    limits = deps.settings.limits
    state = ctx.state.evolve(package_name=ctx.seen.name, source_version_before=ctx.seen.version_before)
    ctx.state = state
    info, run = _request_info(ctx), _run(ctx, deps)
    now = deps.clock.time()
    decision = decide_after_error(error, state, deps.settings.retry, now=now, max_countdown_s=limits.max_countdown_s)
    if decision.verdict == "retry":
        assert decision.retry_at is not None
        retrying = Outcome.retrying(
            info,
            run,
            error,
            next_retry_at=datetime.fromtimestamp(decision.retry_at, UTC),
            return_value=error.return_value,
            source_version_before=ctx.seen.version_before,
        )
        log.info(
            "refresh %s of %s/%s: %s, next attempt in %.1fs",
            info.request_id,
            info.site_code,
            info.package_id,
            error.kind,
            decision.wait_s,
            extra={"kind": error.kind},
        )
        medium = isinstance(error, MediumNotReadyError)
        requeue = Requeue(
            decision.countdown_s,
            _retry_kwargs(ctx, decision.state),
            state=WAITING_FOR_MEDIUM if medium else None,
            detail=f"{error.kind}: next attempt at {retrying.to_dict()['next_retry_at']}" if medium else "",
        )
        return Plan((retrying,), requeue, request_id=ctx.request_id)
    final = Outcome.final_failure(
        info, run, error, return_value=error.return_value, source_version_before=ctx.seen.version_before
    )
    log.info(
        "refresh %s of %s/%s ended %s: %s",
        info.request_id,
        info.site_code,
        info.package_id,
        final.status,
        error.kind,
        extra={"kind": error.kind},
    )
    return _ending(ctx, deps, final)


STEPS: tuple[Step, ...] = (
    _admit,
    _redelivery,
    _wake_early,
    _follow,
    _bulk_child,
    _coalesce,
    _exclusive,
    _provider_slot,
    _attempt,
    _decide,
)


def _ending(ctx: _Context, deps: DeliveryDeps, final: Outcome) -> Plan:
    """The request's final outcome, and, if it led a coalesced refresh, its followers' finals too."""
    if not ctx.leads:
        return Plan((final,), Done(), request_id=ctx.request_id)
    request = ctx.valid
    closed = deps.coalescer.close(request.site_code, request.package_id, ctx.request_id)
    joined = tuple(_joined_final(final, follower) for follower in closed.followers)
    return Plan((final, *joined), Done(), request_id=ctx.request_id, followers_of=ctx.request_id)


def _joined_final(final: Outcome, follower: Follower) -> Outcome:
    info = follower.info
    requested_at = info.get("requested_at")
    return final.joined_by(
        RequestInfo(
            request_id=follower.request_id,
            site_code=final.site_code,
            package_class=final.package_class,
            package_id=final.package_id,
            requested_at=parse_timestamp(requested_at) if isinstance(requested_at, str) else final.requested_at,
            correlation_id=info.get("correlation_id") if is_valid_id(info.get("correlation_id")) else None,
            task_id=info.get("task_id") if is_valid_id(info.get("task_id")) else None,
        )
    )


def _follower_info(ctx: _Context) -> dict[str, Any]:
    """What the leader needs to publish this request's final if it joins (its own ids and time)."""
    info = _request_info(ctx)
    return {
        "correlation_id": info.correlation_id,
        "task_id": info.task_id,
        "requested_at": format_timestamp(info.requested_at),
    }


# -- plans for messages we cannot trust ------------------------------------------------------


def reject_delivery(delivery: Delivery, error: RefreshError, deps: DeliveryDeps) -> Plan:
    """The plan for a message refused before it could be read as a request (e.g. an undecodable body)."""
    ctx = _Context(delivery, started_at=deps.clock.time(), started_mono=deps.clock.monotonic())
    return _rejection(ctx, deps, error)


def _rejection(ctx: _Context, deps: DeliveryDeps, error: RefreshError) -> Plan:
    delivery = ctx.delivery
    key = message_key(delivery)
    info = untrusted_info(delivery, key, ctx.started_at)
    outcome = Outcome.rejected(info, _run(ctx, deps), error)
    return Plan((outcome,), Done(), message_key=key, request_id=info.request_id)


def internal_failure_plan(delivery: Delivery, exc: BaseException, deps: DeliveryDeps) -> Plan:
    """The final outcome of a delivery that hit a bug: `failed`, kind `internal`, only the type named.

    An exception's text can hold what it failed on (a password that would not encode), so only
    its type is kept.
    """
    ctx = _Context(delivery, started_at=deps.clock.time(), started_mono=deps.clock.monotonic())
    key = message_key(delivery)
    info = untrusted_info(delivery, key, ctx.started_at)
    error = InternalError(f"internal error: {type(exc).__name__}")
    return Plan((Outcome.final_failure(info, _run(ctx, deps), error),), Done(), request_id=info.request_id)


def _task_id_of(ctx: _Context) -> str:
    return task_id_for(ctx.delivery, ctx.request_id)


# -- helpers ------------------------------------------------------------------------------------


class _SlotGate:
    """The site's provider slots as the attempt sees them (worker.usecase.attempt.OperationGate)."""

    def __init__(self, ctx: _Context, deps: DeliveryDeps) -> None:
        self._ctx = ctx
        self._deps = deps

    @functools.cached_property
    def _follow_up_holder(self) -> str:
        # Only a verifying request needs it; a digest keeps it within the holder id's length.
        digest = hashlib.blake2b(self._ctx.request_id.encode("utf-8", "backslashreplace"), digest_size=12)
        return f"follow-up-{digest.hexdigest()}"

    def invoked(self) -> None:
        _release_slots(self._ctx, self._deps)

    def run(self, operation: Callable[[], _T]) -> _T | None:
        slots = self._deps.slots
        site = self._ctx.valid.site_code
        limit = self._deps.settings.provider(site).max_concurrency
        # In line at the highest priority, blocked until a release hands it a slot (no slot idles
        # waiting for a poll), for at most one poll interval: then this poll is skipped.
        answer = slots.await_slot(
            site,
            self._follow_up_holder,
            limit,
            priority=PRIORITY_FOLLOW_UP,
            timeout_s=self._deps.settings.limits.verify_poll_s,
        )
        if answer is None:
            return None
        try:
            return operation()
        finally:
            slots.release(answer.lease)


def _unlock(ctx: _Context, deps: DeliveryDeps) -> None:
    """Give back the attempt lock (a delivery that parks or waits holds none)."""
    lock, ctx.lock = ctx.lock, None
    if lock is not None:
        deps.fences.unlock(ctx.request_id, lock)


def _release_slots(ctx: _Context, deps: DeliveryDeps) -> None:
    """Give back the site slot and the lane slot this delivery holds (each once)."""
    leases = (ctx.lease, ctx.lane_lease)
    ctx.lease = ctx.lane_lease = None
    for lease in leases:
        if lease is not None:
            deps.slots.release(lease)


class _BoundFence:
    """The fences store bound to one request id (what `attempt_refresh` takes)."""

    def __init__(self, fences: Fences, request_id: str) -> None:
        self._fences = fences
        self._request_id = request_id

    def read(self) -> FenceSnapshot | None:
        return self._fences.read(self._request_id)

    def write(self, snapshot: FenceSnapshot) -> None:
        self._fences.write(self._request_id, snapshot)


def _request_info(ctx: _Context) -> RequestInfo:
    request, state = ctx.valid, ctx.state
    asked = state.requested_at if state.requested_at is not None else state.first_attempt_at
    return RequestInfo(
        request_id=ctx.request_id,
        site_code=request.site_code,
        package_class=request.package_class,
        package_id=request.package_id,
        requested_at=datetime.fromtimestamp(asked if asked is not None else ctx.started_at, UTC),
        correlation_id=request.correlation_id,
        task_id=trusted_task_id(ctx.delivery.task_id),
        package_name=ctx.seen.name,
    )


def _run(ctx: _Context, deps: DeliveryDeps) -> AttemptInfo:
    attempts = max(1, ctx.state.attempts)
    started_at = datetime.fromtimestamp(ctx.started_at, UTC)
    return AttemptInfo(
        attempt=attempts,
        attempts=attempts,
        started_at=started_at,
        # The wall clock may step back during an attempt; an outcome never ends before it starts.
        finished_at=max(started_at, datetime.fromtimestamp(deps.clock.time(), UTC)),
        worker=deps.worker,
        duration_ms=max(0.0, (deps.clock.monotonic() - ctx.started_mono) * 1000.0),
    )


def _retry_kwargs(ctx: _Context, state: RetryState, *, parking: bool = False) -> dict[str, Any]:
    # The resolved request id travels with the message, so every later delivery is keyed the same.
    # Only a parked message is marked parked: one re-queued any other way holds no slot.
    state = state.evolve(parked_at=ctx.started_at if parking else None)
    kwargs = ctx.valid.model_dump(mode="json")
    kwargs["request_id"] = ctx.request_id
    kwargs[RETRY_STATE_KWARG] = state.to_kwargs()
    return kwargs


def _longest_wait_s(settings: Settings) -> float:
    policies = (settings.retry.in_call, settings.retry.transient, settings.retry.medium)
    return max(settings.follow.max_poll_s, *(p.max_backoff_s for p in policies))
