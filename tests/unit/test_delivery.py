"""The refresh use case (worker/usecase/delivery.py) and its executor (worker/usecase/execute.py), with fakes passed in.

No monkeypatching and no Celery: the collaborators are arguments, the answer is a Plan.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, NoReturn

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from config.settings import LimitSettings, ProviderSettings, RetryPolicy, RetrySettings, Settings
from errors import InternalError, MediumNotReadyError, QuotaError, RefreshError
from testing.standins import MemoryBulkChildren, MemoryCoalescer, MemorySlots, MemoryWatch
from worker.domain.deadline import Deadline
from worker.domain.ids import child_request_id
from worker.domain.outcomes import AttemptInfo, Outcome, RequestInfo
from worker.domain.packages import PackageInfo
from worker.domain.request import RETRY_STATE_KWARG
from worker.usecase.delivery import handle_delivery
from worker.usecase.execute import run_delivery
from worker.usecase.plan import Done, Drop, Park, Plan, Requeue
from worker.usecase.ports import Delivery, DeliveryDeps
from worker.usecase.untrusted import message_key
from worker.usecase.values import (
    JOINED,
    PRIORITY_PATIENT,
    PRIORITY_SINGLE,
    WAITING_FOR_SLOT,
    FenceSnapshot,
    Granted,
    Lease,
)

SECRET = "Sommer€2024-Geheim"
PLAIN = PackageInfo(
    class_name="SMS_Package",
    package_id="PS100001",
    name="7-Zip",
    pkg_source_flag=2,
    source_version=4,
    action_in_progress=0,
)
COMPRESS = replace(PLAIN, pkg_source_flag=3)
SETTINGS = Settings(
    providers={"PS1": ProviderSettings(endpoint="https://sccm01:5986/wsman", username="u", password="p")},
    retry=RetrySettings(
        in_call=RetryPolicy(max_attempts=1, initial_backoff_s=0, max_backoff_s=0),
        transient=RetryPolicy(max_attempts=3, initial_backoff_s=10, max_backoff_s=100, jitter=0.0),
        medium=RetryPolicy(max_attempts=2, initial_backoff_s=60, max_backoff_s=60, jitter=0.0),
    ),
    limits=LimitSettings(),
)
VALID = {"site_code": "PS1", "package_id": "PS100001", "package_class": "SMS_Package", "request_id": "req-1"}


@dataclass
class FakeClient:
    """Answers Gets with `package` (moved by each accepted Invoke when `moves` is set)."""

    package: PackageInfo = PLAIN
    return_value: int | BaseException = 0
    moves: bool = True
    gets: int = 0
    invokes: int = 0

    def get_package(self, package_class: str, package_id: str, *, deadline: Deadline | None = None) -> PackageInfo:
        self.gets += 1
        if isinstance(self.return_value, UnicodeEncodeError):
            raise self.return_value
        return self.package

    def refresh(self, package_class: str, package_id: str, *, deadline: Deadline | None = None) -> int:
        self.invokes += 1
        if isinstance(self.return_value, BaseException):
            raise self.return_value
        if self.return_value == 0 and self.moves:
            self.package = replace(self.package, action_in_progress=1, last_refresh_time=f"t{self.invokes}")
        return self.return_value


@dataclass
class Recorder:
    """Outcome sink and final-marker lookup in one, like the Redis writer (a final forgets the watch entry)."""

    outcomes: list[Outcome] = field(default_factory=list)
    fail_finals: bool = False
    watch: MemoryWatch | None = None

    def publish(self, outcome: Outcome, *, message_key: str | None = None) -> bool:
        if self.fail_finals and outcome.final:
            raise RedisConnectionError("outcome Redis down")
        self.outcomes.append(outcome)
        if outcome.final and self.watch is not None:
            self.watch.forget(outcome.request_id)
        return True

    def final_recorded(self, request_id: str) -> bool:
        return self.final_outcome(request_id) is not None

    def final_outcome(self, request_id: str) -> Outcome | None:
        finals = (o for o in self.outcomes if o.final and o.status != "rejected" and o.request_id == request_id)
        return next(finals, None)


@dataclass
class MemoryFences:
    by_request: dict[str, FenceSnapshot] = field(default_factory=dict)
    locked: set[str] = field(default_factory=set)
    left_s: float = 0.0

    def read(self, request_id: str) -> FenceSnapshot | None:
        return self.by_request.get(request_id)

    def write(self, request_id: str, snapshot: FenceSnapshot) -> None:
        self.by_request[request_id] = snapshot

    def try_lock(self, request_id: str, *, ttl_s: int) -> str | None:
        if request_id in self.locked:
            return None
        self.locked.add(request_id)
        return "token"

    def lock_left_s(self, request_id: str) -> float:
        return self.left_s

    def unlock(self, request_id: str, token: str) -> None:
        self.locked.discard(request_id)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


class RequeuedError(Exception):
    def __init__(self, kwargs: Mapping[str, Any], countdown_s: float) -> None:
        super().__init__("requeued")
        self.kwargs = dict(kwargs)
        self.countdown_s = countdown_s


def requeue(kwargs: Mapping[str, Any], countdown_s: float) -> NoReturn:
    raise RequeuedError(kwargs, countdown_s)


@dataclass
class World:
    client: FakeClient = field(default_factory=FakeClient)
    recorder: Recorder = field(default_factory=Recorder)
    fences: MemoryFences = field(default_factory=MemoryFences)
    clock: FakeClock = field(default_factory=FakeClock)
    slots: MemorySlots = field(init=False)
    coalescer: MemoryCoalescer = field(init=False)
    bulks: MemoryBulkChildren = field(init=False)
    watch: MemoryWatch = field(init=False)

    def __post_init__(self) -> None:
        now = self.clock.time
        self.slots = MemorySlots(now, lease_s=SETTINGS.limits.slot_lease_s, waiter_ttl_s=120.0)
        self.coalescer = MemoryCoalescer(now)
        self.bulks = MemoryBulkChildren(now)
        self.watch = MemoryWatch(now)
        self.recorder.watch = self.watch

    @property
    def deps(self) -> DeliveryDeps:
        return DeliveryDeps(
            settings=SETTINGS,
            provider=lambda _site: self.client,
            finals=self.recorder,
            fences=self.fences,
            worker="test-host:1",
            coalescer=self.coalescer,
            slots=self.slots,
            bulks=self.bulks,
            watch=self.watch,
            on_final=self.bulks.child_ended,
            clock=self.clock,
            sleep=lambda _s: None,
            unavailable=(RedisError,),
        )

    def deliver(self, kwargs: Mapping[str, Any], *, task_id: str | None = "task-1", args: tuple[Any, ...] = ()) -> Any:
        return run_delivery(Delivery(args, kwargs, task_id), self.deps, self.recorder, requeue)


def test_an_accepted_refresh_plans_one_success_outcome_and_done() -> None:
    """ReturnValue 0: the plan is one final `accepted` outcome, then ack."""
    world = World()
    plan = handle_delivery(Delivery((), VALID, "task-1"), world.deps)
    assert isinstance(plan.then, Done)
    (outcome,) = plan.outcomes
    assert (outcome.status, outcome.request_id, outcome.package_name) == ("accepted", "req-1", "7-Zip")
    assert world.client.invokes == 1


def test_a_transient_error_plans_a_retrying_event_and_a_requeue_with_the_state() -> None:
    """A quota fault: one `retrying` event, re-queued after the transient policy's first backoff."""
    world = World(client=FakeClient(return_value=QuotaError("quota")))
    plan = handle_delivery(Delivery((), VALID, "task-1"), world.deps)
    (event,) = plan.outcomes
    assert event.status == "retrying" and not event.final
    assert isinstance(plan.then, Requeue) and plan.then.countdown_s == 10
    state = plan.then.kwargs[RETRY_STATE_KWARG]
    assert state["attempts"] == 1 and state["transient_retries"] == 1
    assert plan.then.kwargs["request_id"] == "req-1"


def test_a_medium_that_never_becomes_ready_plans_the_give_up_outcome() -> None:
    """Once the medium policy is spent, the final status is gave_up_medium_not_ready."""
    world = World(client=FakeClient(package=COMPRESS, return_value=21))
    kwargs: dict[str, Any] = dict(VALID)
    for _ in range(5):
        plan = handle_delivery(Delivery((), kwargs, "task-1"), world.deps)
        if not isinstance(plan.then, Requeue):
            break
        kwargs = plan.then.kwargs
        world.clock.now += plan.then.countdown_s
    (final,) = plan.outcomes
    assert final.status == "gave_up_medium_not_ready" and final.return_value == 21
    assert isinstance(plan.then, Done)


def test_a_redelivery_of_a_finished_request_is_dropped_without_calling_the_provider() -> None:
    """A message delivered again after its request ended does nothing (no call, no event)."""
    world = World()
    world.deliver(VALID)
    calls_before = (world.client.gets, world.client.invokes)
    result = world.deliver(VALID)
    assert result == {"request_id": "req-1", "already_final": True}
    assert (world.client.gets, world.client.invokes) == calls_before and len(world.recorder.outcomes) == 1


def test_a_final_that_cannot_be_published_requeues_the_message_as_it_arrived() -> None:
    """Outcome Redis down past the deadline: the original message goes back, nothing is acked."""
    world = World(recorder=Recorder(fail_finals=True))
    with pytest.raises(RequeuedError) as requeued:
        world.deliver(VALID)
    assert requeued.value.kwargs == VALID and requeued.value.countdown_s == SETTINGS.retry.publish_requeue_s


def test_unexpected_exception_becomes_one_internal_final_outcome_without_its_text() -> None:
    """The request ends 'failed' (kind internal) and Celery sees a sanitised InternalError."""
    world = World(client=FakeClient(return_value=UnicodeEncodeError("latin-1", SECRET, 6, 7, "ordinal")))
    with pytest.raises(InternalError) as raised:
        world.deliver({"site_code": "PS1", "package_id": "PS100001", "request_id": "req-internal-1"})
    assert SECRET not in repr(raised.value) and SECRET not in str(raised.value)
    (final,) = world.recorder.outcomes
    assert final.final and final.status == "failed" and final.request_id == "req-internal-1"
    assert final.error is not None and final.error["kind"] == "internal"
    assert final.error["message"] == "internal error: UnicodeEncodeError"
    assert SECRET not in final.to_json()


def test_an_invoke_that_landed_before_a_crash_is_not_sent_again() -> None:
    """A redelivery finds the fence, sees the package moved, and reports accepted without invoking."""
    world = World()
    world.fences.write("req-1", FenceSnapshot.of(PLAIN, world.clock.now))
    world.client.package = replace(PLAIN, action_in_progress=1)
    plan = handle_delivery(Delivery((), VALID, "task-1"), world.deps)
    assert [o.status for o in plan.outcomes] == ["accepted"]
    assert world.client.invokes == 0


def test_an_invoke_that_never_landed_is_sent_again() -> None:
    """A fence with an unmoved package means the earlier invoke did not land: invoke once."""
    world = World()
    world.fences.write("req-1", FenceSnapshot.of(PLAIN, world.clock.now))
    plan = handle_delivery(Delivery((), VALID, "task-1"), world.deps)
    assert [o.status for o in plan.outcomes] == ["accepted"] and world.client.invokes == 1


def test_a_rejected_request_keeps_its_whole_valid_request_id() -> None:
    """A valid 100-character request id that is rejected is recorded under all 100 characters."""
    world = World()
    request_id = "r" * 100
    world.deliver({**VALID, "request_id": request_id, "force": "yes"})
    (rejected,) = world.recorder.outcomes
    assert rejected.status == "rejected" and rejected.request_id == request_id


@pytest.mark.parametrize(
    "offered", ["../../etc/passwd", "${jndi:ldap://x/a}", "ok\u202eevil", "\x1b[31mred", "c\udc80"]
)
def test_a_request_id_that_breaks_the_rule_is_never_echoed(offered: str) -> None:
    """The rejection is keyed by the task id; the offered id appears nowhere in the outcome."""
    world = World()
    world.deliver({**VALID, "request_id": offered, "correlation_id": offered}, task_id="task-42")
    (rejected,) = world.recorder.outcomes
    assert rejected.request_id == "task-42" and rejected.correlation_id is None
    assert offered not in rejected.to_json()


def test_a_message_without_a_usable_id_is_keyed_by_its_digest() -> None:
    """No valid request id and no valid task id: the key is a digest of the message, stable per message."""
    world = World()
    delivery = Delivery((), {"site_code": 1}, "bad task id")
    world.deliver(delivery.kwargs, task_id=delivery.task_id)
    (rejected,) = world.recorder.outcomes
    assert rejected.request_id == message_key(delivery) == message_key(replace(delivery))
    assert rejected.request_id.startswith("msg-")


def test_a_lone_surrogate_in_any_field_ends_in_a_publishable_rejection() -> None:
    """Surrogates are refused by validation and never reach the outcome's JSON."""
    for name in ("site_code", "package_id", "package_class", "request_id", "correlation_id"):
        world = World()
        world.deliver({**VALID, name: "c\udc80"})
        (rejected,) = world.recorder.outcomes
        assert rejected.status == "rejected", name
        rejected.to_json().encode("utf-8")


def test_a_kwarg_named_self_is_rejected_as_an_unknown_field() -> None:
    """`self` is just another unknown field to the use case."""
    world = World()
    world.deliver({**VALID, "self": 1})
    (rejected,) = world.recorder.outcomes
    assert rejected.status == "rejected" and rejected.error is not None
    assert "self: unknown field" in rejected.error["message"]


@pytest.mark.parametrize("force", ["yes", "true", 1, "1"])
def test_force_is_a_json_boolean_and_nothing_else(force: object) -> None:
    """A task sequence is never refreshed on a truthy string or number."""
    world = World()
    world.deliver({**VALID, "package_class": "SMS_TaskSequencePackage", "force": force})
    (rejected,) = world.recorder.outcomes
    assert rejected.status == "rejected" and world.client.invokes == 0


def test_positional_arguments_are_rejected() -> None:
    """The contract is kwargs only."""
    world = World()
    world.deliver(VALID, args=("PS1",))
    (rejected,) = world.recorder.outcomes
    assert rejected.status == "rejected" and world.client.invokes == 0


def test_a_medium_error_carries_the_return_value_the_provider_answered() -> None:
    """The retrying event reports the ReturnValue from the error's field, not from its kind."""
    world = World(client=FakeClient(package=COMPRESS, return_value=21))
    plan = handle_delivery(Delivery((), VALID, "task-1"), world.deps)
    (event,) = plan.outcomes
    assert event.return_value == 21 and event.error is not None and event.error["kind"] == "medium_not_ready"


def test_errors_raised_by_the_provider_keep_their_meaning() -> None:
    """A permanent error from the client fails at once with its kind."""
    world = World(client=FakeClient(return_value=MediumNotReadyError("x")))
    plan = handle_delivery(Delivery((), VALID, "task-1"), world.deps)
    assert plan.outcomes[0].status == "retrying"
    world = World(client=FakeClient(return_value=RefreshError("generic")))
    plan = handle_delivery(Delivery((), VALID, "task-1"), world.deps)
    assert plan.outcomes[0].status == "failed" and isinstance(plan.then, Done)


def test_a_drop_plan_publishes_nothing() -> None:
    """Drop is an ack without any outcome."""
    world = World()
    world.recorder.outcomes.append(handle_delivery(Delivery((), VALID, "t"), world.deps).outcomes[0])
    plan = handle_delivery(Delivery((), VALID, "t"), world.deps)
    assert isinstance(plan.then, Drop) and plan.outcomes == ()


def test_a_second_copy_of_a_message_waits_while_the_first_attempts() -> None:
    """Two deliveries at once (kombu restored an unacked copy): only one may invoke."""
    world = World()
    world.fences.locked.add("req-1")
    plan = handle_delivery(Delivery((), VALID, "task-1"), world.deps)
    assert plan.outcomes == () and isinstance(plan.then, Requeue) and world.client.invokes == 0
    world.fences.locked.clear()
    plan = handle_delivery(Delivery((), plan.then.kwargs, "task-1"), world.deps)
    assert [o.status for o in plan.outcomes] == ["accepted"] and "req-1" not in world.fences.locked


def test_a_second_copy_looks_again_when_the_holders_lock_lapses_and_within_two_seconds_at_most() -> None:
    """A frozen holder stops renewing its lock: the copy looks again once it lapses; a live holder lets go
    sooner (it parks, re-queues or ends), so the copy never waits out a whole lock lifetime."""
    world = World()
    world.fences.locked.add("req-1")
    world.fences.left_s = 0.5
    plan = handle_delivery(Delivery((), VALID, "task-1"), world.deps)
    assert isinstance(plan.then, Requeue) and plan.then.countdown_s == pytest.approx(1.5)
    for left_s in (3.5, 10_000.0):
        world.fences.left_s = left_s
        plan = handle_delivery(Delivery((), VALID, "task-1"), world.deps)
        assert isinstance(plan.then, Requeue) and plan.then.countdown_s == pytest.approx(2.0)


def test_a_medium_wait_is_reported_as_a_custom_state_before_the_requeue() -> None:
    """Flower shows WAITING_FOR_MEDIUM: the executor reports the plan's state, then re-queues."""
    world = World(client=FakeClient(package=COMPRESS, return_value=21))
    reported: list[tuple[str, str]] = []
    with pytest.raises(RequeuedError):
        run_delivery(
            Delivery((), VALID, "task-1"),
            world.deps,
            world.recorder,
            requeue,
            control_flow=(RequeuedError,),
            report_state=lambda state, detail: reported.append((state, detail)),
        )
    ((state, detail),) = reported
    assert state == "WAITING_FOR_MEDIUM" and "medium_not_ready" in detail


# -- the stores' steps, through their in-memory stand-ins (testing/standins/) -------------------

BULK_ID = "bulk-" + "1" * 32  # the strict shape: "bulk-" and 32 lowercase hex digits
LIMIT = SETTINGS.provider("PS1").max_concurrency


def child_of(bulk_id: str, package_id: str) -> dict[str, Any]:
    """A bulk child's kwargs, as the bulk runner sends them."""
    request_id = child_request_id(bulk_id, package_id)
    return {"site_code": "PS1", "package_id": package_id, "request_id": request_id, "correlation_id": bulk_id}


def fill_slots(world: World) -> list[Lease]:
    """Every slot of PS1 held by someone else."""
    leases = []
    for i in range(LIMIT):
        granted = world.slots.try_acquire("PS1", f"other-{i}", LIMIT, priority=PRIORITY_SINGLE)
        assert isinstance(granted, Granted)
        leases.append(granted.lease)
    return leases


def waits_for_a_slot(plan: Plan) -> Park:
    assert plan.outcomes == () and isinstance(plan.then, Park) and plan.then.state == WAITING_FOR_SLOT
    return plan.then


def parked(world: World, plan: Plan) -> Park:
    """The plan parks the request; the park is recorded as tasks/park.py does (its kwargs as the wake record)."""
    park = waits_for_a_slot(plan)
    world.slots.park(park.site_code, park.holder_id, park.limit, priority=park.priority, wake=json.dumps(park.kwargs))
    return park


def woken(world: World) -> list[dict[str, Any]]:
    """The messages releases sent back since the last look (what the broker would deliver next)."""
    messages = [json.loads(record) for record in world.slots.woken]
    world.slots.woken.clear()
    return messages


def test_a_second_request_for_a_pending_package_joins_it() -> None:
    """While req-1 waits for its medium, req-2 for the same package joins it instead of invoking."""
    world = World(client=FakeClient(package=COMPRESS, return_value=21))
    leader = handle_delivery(Delivery((), VALID, "task-1"), world.deps)
    assert isinstance(leader.then, Requeue) and world.client.invokes == 1
    plan = handle_delivery(Delivery((), {**VALID, "request_id": "req-2"}, "task-2"), world.deps)
    assert plan.outcomes == () and isinstance(plan.then, Requeue) and plan.then.state == JOINED
    assert "req-1" in plan.then.detail and world.client.invokes == 1


def a_follower_whose_leader_ended(world: World) -> Requeue:
    """req-2 joins req-1 while req-1 waits for its medium; then req-1 is accepted: req-2's next wake."""
    world.client = FakeClient(package=COMPRESS, return_value=21)
    leader = handle_delivery(Delivery((), VALID, "task-1"), world.deps)
    follower = handle_delivery(Delivery((), {**VALID, "request_id": "req-2"}, "task-2"), world.deps)
    assert isinstance(leader.then, Requeue) and isinstance(follower.then, Requeue)
    world.clock.now += leader.then.countdown_s
    world.client.return_value = 0
    world.deliver(leader.then.kwargs)
    world.clock.now += follower.then.countdown_s
    return follower.then


def test_the_leaders_final_ends_its_follower() -> None:
    """The leader's accepted refresh is the follower's final too; the follower's next wake is dropped."""
    world = World()
    follower = a_follower_whose_leader_ended(world)
    first, joined = world.recorder.outcomes
    assert (first.request_id, first.status) == ("req-1", "accepted")
    assert (joined.request_id, joined.status, joined.joined_request_id) == ("req-2", "accepted", "req-1")
    assert world.coalescer.pending_followers("req-1") == () and world.client.invokes == 2
    assert world.deliver(follower.kwargs, task_id="task-2") == {"request_id": "req-2", "already_final": True}


def test_a_request_after_the_leaders_final_refreshes_anew() -> None:
    """Once the leader closed its group, the next request for the package leads and invokes again."""
    world = World()
    world.deliver(VALID)
    world.deliver({**VALID, "request_id": "req-2"}, task_id="task-2")
    assert [o.request_id for o in world.recorder.outcomes] == ["req-1", "req-2"] and world.client.invokes == 2


def test_no_free_slot_parks_the_request_waiting_for_a_slot() -> None:
    """Every slot held: no provider call, a WAITING_FOR_SLOT park naming the slots in use."""
    world = World()
    fill_slots(world)
    park = waits_for_a_slot(handle_delivery(Delivery((), VALID, "task-1"), world.deps))
    assert f"in line for PS1's provider ({LIMIT} of {LIMIT} slots in use" in park.detail
    assert (park.site_code, park.holder_id, park.priority, park.limit) == ("PS1", "req-1", PRIORITY_SINGLE, LIMIT)
    assert world.client.gets == 0 and world.client.invokes == 0


def test_a_request_retrying_its_medium_parks_behind_requests_not_tried_yet() -> None:
    """A medium re-try is patient work: it yields its turn for a slot as a bulk child does."""
    world = World(client=FakeClient(package=COMPRESS, return_value=21))
    first = handle_delivery(Delivery((), VALID, "task-1"), world.deps)
    assert isinstance(first.then, Requeue) and world.client.invokes == 1
    world.clock.now += first.then.countdown_s
    fill_slots(world)
    park = waits_for_a_slot(handle_delivery(Delivery((), first.then.kwargs, "task-1"), world.deps))
    assert park.priority == PRIORITY_PATIENT > PRIORITY_SINGLE


def test_a_released_slot_wakes_the_parked_request_which_claims_it() -> None:
    """Next in line, its message goes back ahead of its slot; that delivery finds the slots still
    full and parks again (this stand-in waits in no thread); the release then hands it the slot and
    sends its message back; that delivery refreshes."""
    world = World()
    leases = fill_slots(world)
    parked(world, handle_delivery(Delivery((), VALID, "task-1"), world.deps))
    (early,) = woken(world)
    parked(world, handle_delivery(Delivery((), early, "task-1"), world.deps))
    assert woken(world) == []
    world.slots.release(leases[0])
    (message,) = woken(world)
    plan = handle_delivery(Delivery((), message, "task-1"), world.deps)
    assert [o.status for o in plan.outcomes] == ["accepted"]
    assert isinstance(world.slots.try_acquire("PS1", "newcomer", LIMIT, priority=PRIORITY_SINGLE), Granted)


def test_a_request_that_parks_holds_no_attempt_lock_and_one_whose_slot_step_fails_gives_it_back() -> None:
    """The lock (taken before the slot, with the fence) goes back when the delivery parks or its slot step raises."""
    world = World()
    fill_slots(world)
    parked(world, handle_delivery(Delivery((), VALID, "task-1"), world.deps))
    assert world.fences.locked == set()

    class UnreachableError(Exception):
        pass

    def fail(*_args: Any, **_kwargs: Any) -> Any:
        raise UnreachableError

    world.slots.try_acquire = fail  # type: ignore[method-assign]
    with pytest.raises(UnreachableError):
        handle_delivery(Delivery((), {**VALID, "request_id": "req-2", "package_id": "PS100009"}, "task-2"), world.deps)
    assert world.fences.locked == set()


def test_a_single_request_is_woken_before_a_bulk_child_that_parked_earlier() -> None:
    """Priority before arrival: the single request parked second gets the freed slot, the child the
    next one (both were woken ahead: half of the limit, 3, rounded up)."""
    world = World()
    child = child_of(BULK_ID, "PS100002")
    world.bulks.add_bulk(BULK_ID, [child["request_id"]])
    leases = fill_slots(world)
    parked(world, handle_delivery(Delivery((), child, "task-c"), world.deps))
    parked(world, handle_delivery(Delivery((), VALID, "task-1"), world.deps))
    early_child, early_single = woken(world)
    assert (early_child["request_id"], early_single["request_id"]) == (child["request_id"], "req-1")
    world.slots.release(leases[0])
    assert woken(world) == []  # the slot is req-1's: its message is on its way already
    parked(world, handle_delivery(Delivery((), early_child, "task-c"), world.deps))  # not its turn: parks again
    plan = handle_delivery(Delivery((), early_single, "task-1"), world.deps)
    assert [(o.request_id, o.status) for o in plan.outcomes] == [("req-1", "accepted")]
    # req-1 gave its slot back at its Invoke: the child is woken by that release.
    assert [m["request_id"] for m in woken(world)] == [child["request_id"]]


def test_a_woken_request_that_ended_meanwhile_gives_its_slot_to_the_next_in_line() -> None:
    """Woken after its request ended some other way, the delivery is dropped and its granted slot moves on at once."""
    world = World()
    leases = fill_slots(world)
    parked(world, handle_delivery(Delivery((), VALID, "task-1"), world.deps))
    other = {**VALID, "request_id": "req-2", "package_id": "PS100009"}
    parked(world, handle_delivery(Delivery((), other, "task-2"), world.deps))
    message, early_other = woken(world)  # both woken ahead of a slot
    world.slots.release(leases[0])
    assert woken(world) == []
    when = datetime.fromtimestamp(world.clock.now, UTC)
    info = RequestInfo(
        request_id="req-1", site_code="PS1", package_class="SMS_Package", package_id="PS100001", requested_at=when
    )
    world.recorder.publish(Outcome.cancelled(info, AttemptInfo(1, 1, when, when, "elsewhere:1")))
    plan = handle_delivery(Delivery((), message, "task-1"), world.deps)
    assert isinstance(plan.then, Drop) and plan.outcomes == ()
    assert woken(world) == []  # req-2 has the slot now; its message went back when it was woken ahead
    plan = handle_delivery(Delivery((), early_other, "task-2"), world.deps)
    assert [(o.request_id, o.status) for o in plan.outcomes] == [("req-2", "accepted")]


def test_a_request_requeued_after_a_woken_attempt_is_no_longer_marked_parked() -> None:
    """Only the parked message carries `parked_at`: a retry after the woken attempt holds no slot to give back."""
    world = World(client=FakeClient(package=COMPRESS, return_value=21))
    leases = fill_slots(world)
    parked(world, handle_delivery(Delivery((), VALID, "task-1"), world.deps))
    world.slots.release(leases[0])
    (message,) = woken(world)
    assert message[RETRY_STATE_KWARG]["parked_at"] is not None
    plan = handle_delivery(Delivery((), message, "task-1"), world.deps)
    assert isinstance(plan.then, Requeue) and plan.then.kwargs[RETRY_STATE_KWARG]["parked_at"] is None


def test_a_child_of_a_cancelled_bulk_ends_cancelled_without_an_attempt() -> None:
    """The bulk was cancelled before its child ran: a `cancelled` final, no provider call, counted by the bulk."""
    world = World()
    child = child_of(BULK_ID, "PS100001")
    world.bulks.add_bulk(BULK_ID, [child["request_id"]])
    world.bulks.cancel(BULK_ID)
    world.deliver(child)
    (final,) = world.recorder.outcomes
    assert (final.request_id, final.status) == (child["request_id"], "cancelled")
    assert world.client.gets == 0 and world.client.invokes == 0
    assert world.bulks.counts(BULK_ID) == {"cancelled": 1}


def test_a_bulk_childs_final_is_checked_in_with_its_bulk() -> None:
    """A child's final is counted by its bulk once, and the child is no longer outstanding."""
    world = World()
    child = child_of(BULK_ID, "PS100001")
    world.bulks.add_bulk(BULK_ID, [child["request_id"]])
    world.deliver(child)
    assert [o.status for o in world.recorder.outcomes] == ["accepted"]
    assert world.bulks.counts(BULK_ID) == {"accepted": 1}
    assert not world.bulks.child_checkin(BULK_ID, child["request_id"]).outstanding


def test_a_bulk_childs_delivery_is_its_sign_of_life() -> None:
    """A delivered child checks in (even one that then waits for a slot); a silent sibling is stalled."""
    world = World()
    waiting, silent = child_of(BULK_ID, "PS100001"), child_of(BULK_ID, "PS100002")
    world.bulks.add_bulk(BULK_ID, [waiting["request_id"], silent["request_id"]])
    world.clock.now += 100
    fill_slots(world)
    waits_for_a_slot(handle_delivery(Delivery((), waiting, "task-c"), world.deps))
    assert world.bulks.stalled_children(BULK_ID, idle_s=50) == [silent["request_id"]]


def test_a_valid_delivery_sets_the_deadline_by_which_its_request_is_seen_again() -> None:
    """Due within the task's time limit plus the visibility timeout and margin; then the watch sends it again."""
    world = World()
    fill_slots(world)
    handle_delivery(Delivery((), VALID, "task-1"), world.deps)
    limits = SETTINGS.limits
    due_at = world.clock.now + SETTINGS.task_time_limit_s + limits.visibility_timeout_s + limits.watch_margin_s
    assert world.watch.overdue(next_within_s=60, now_s=due_at - 1) == []
    (lost,) = world.watch.overdue(next_within_s=60, now_s=due_at)
    assert (lost.request_id, lost.task_id, lost.kwargs["request_id"]) == ("req-1", "task-1", "req-1")


def test_a_requeued_request_is_due_after_its_countdown() -> None:
    """A re-queue moves the deadline to its countdown plus the visibility timeout and margin."""
    world = World(client=FakeClient(return_value=QuotaError("quota")))
    with pytest.raises(RequeuedError) as requeued:
        run_delivery(Delivery((), VALID, "task-1"), world.deps, world.recorder, requeue, control_flow=(RequeuedError,))
    limits = SETTINGS.limits
    due_at = world.clock.now + requeued.value.countdown_s + limits.visibility_timeout_s + limits.watch_margin_s
    assert world.watch.overdue(next_within_s=60, now_s=due_at - 1) == []
    (lost,) = world.watch.overdue(next_within_s=60, now_s=due_at)
    assert lost.kwargs == requeued.value.kwargs


def test_a_final_outcome_forgets_the_watched_request() -> None:
    """Once its final is recorded, a request is never sent again by the watch."""
    world = World()
    world.deliver(VALID)
    assert world.watch.overdue(next_within_s=60, now_s=world.clock.now + 1e6) == []


def test_a_follower_ended_by_its_leader_is_not_watched_after_its_last_wake() -> None:
    """The follower's watcher wakes after the leader published its final: dropped, and forgotten by the watch."""
    world = World()
    world.deliver(a_follower_whose_leader_ended(world).kwargs, task_id="task-2")
    assert world.watch.overdue(next_within_s=60, now_s=world.clock.now + 1e6) == []


def test_a_redelivered_bulk_child_already_final_is_counted_by_its_bulk_again() -> None:
    """Its worker died between the final and the bulk's count: the redelivery hands the final to the bulk once more."""
    counted: list[Outcome] = []
    world = World()
    child = {**VALID, "request_id": f"{BULK_ID}:PS100001", "correlation_id": BULK_ID}
    world.deliver(child)
    deps = replace(world.deps, on_final=counted.append)
    result = run_delivery(Delivery((), child, "task-2"), deps, world.recorder, requeue)
    assert result == {"request_id": f"{BULK_ID}:PS100001", "already_final": True}
    assert [(o.request_id, o.status) for o in counted] == [(f"{BULK_ID}:PS100001", "accepted")]
    assert len(world.recorder.outcomes) == 1 and world.client.invokes == 1


def test_a_boot_image_waiting_for_its_lane_looks_again_within_five_seconds() -> None:
    """The lane's estimate before any release is 30 s (a rebuild); a freed lane must not idle that long."""
    world = World()
    boot = {**VALID, "package_class": "SMS_BootImagePackage"}
    holder = world.slots.try_acquire("PS1", "other-boot", 1, priority=PRIORITY_SINGLE, lane="SMS_BootImagePackage")
    assert isinstance(holder, Granted)
    plan = handle_delivery(Delivery((), boot, "task-1"), world.deps)
    assert plan.outcomes == () and isinstance(plan.then, Requeue) and plan.then.state == WAITING_FOR_SLOT
    assert 0 < plan.then.countdown_s <= 5.0 and "next look in 5.0s" in plan.then.detail
