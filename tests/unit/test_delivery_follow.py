"""The refresh use case with until=distributed: what the plans say at acceptance and at each poll (fakes, no I/O)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

import pytest

from config.settings import FollowSettings, LimitSettings, ProviderSettings, Settings
from testing.standins import MemoryBulkChildren, MemoryCoalescer, MemorySlots, MemoryWatch, NoFences
from worker.domain.deadline import Deadline
from worker.domain.distribution import DpState, DpStatusBatch, DpStatusRow
from worker.domain.outcomes import Outcome
from worker.domain.packages import PackageInfo
from worker.domain.request import RETRY_STATE_KWARG, RetryState
from worker.usecase.delivery import handle_delivery
from worker.usecase.execute import run_delivery
from worker.usecase.plan import Done, Plan, Requeue
from worker.usecase.ports import Delivery, DeliveryDeps
from worker.usecase.values import FOLLOWING_TO_DPS

SETTINGS = Settings(
    providers={"PS1": ProviderSettings(endpoint="https://sccm01:5986/wsman", username="u", password="p")},
    limits=LimitSettings(),
    follow=FollowSettings(first_poll_s=60, max_poll_s=1800, deadline_s=3600),
)
REQUEST = {
    "site_code": "PS1",
    "package_id": "PS100001",
    "package_class": "SMS_Package",
    "request_id": "req-1",
    "until": "distributed",
}
V0 = 4
DPS = ("DP01", "DP02")


def nal(dp: str) -> str:
    return f'["Display=\\\\{dp}\\"]MSWNET:["SMS_SITE=PS1"]\\\\{dp}\\'


def row(dp: str, state: DpState, version: int) -> DpStatusRow:
    return DpStatusRow("PS100001", nal(dp), dp, state, int(state), version)


@dataclass
class FollowedClient:
    """A provider whose package moves to V0+1 when DistMgr `processes` it, with scripted DP rows."""

    version: int | None = V0
    rows: list[DpStatusRow] = field(default_factory=lambda: [row(dp, DpState.INSTALLED, V0) for dp in DPS])
    invokes: int = 0
    reads: int = 0

    def get_package(self, package_class: str, package_id: str, *, deadline: Deadline | None = None) -> PackageInfo:
        return PackageInfo(class_name=package_class, package_id=package_id, source_version=self.version)

    def refresh(self, package_class: str, package_id: str, *, deadline: Deadline | None = None) -> int:
        self.invokes += 1
        return 0

    def read_dp_status(
        self, package_ids: Iterable[str], *, max_rows: int = 50_000, deadline: Deadline | None = None
    ) -> DpStatusBatch:
        self.reads += 1
        return DpStatusBatch(rows=tuple(self.rows))

    def read_dp_messages(
        self, package_ids: Iterable[str], *, max_rows: int = 50_000, deadline: Deadline | None = None
    ) -> DpStatusBatch:
        return DpStatusBatch()

    def read_source_versions(
        self, package_ids: Iterable[str], *, max_rows: int = 50_000, deadline: Deadline | None = None
    ) -> DpStatusBatch:
        raise AssertionError("a request's own reads never batch")


class Finals:
    def final_recorded(self, request_id: str) -> bool:
        return False

    def final_outcome(self, request_id: str) -> Outcome | None:
        return None


@dataclass
class World:
    client: FollowedClient = field(default_factory=FollowedClient)
    now: float = 1_800_000_000.0

    def __post_init__(self) -> None:
        self.coalescer = MemoryCoalescer(lambda: self.now)
        self.deps = DeliveryDeps(
            settings=SETTINGS,
            provider=lambda _site: self.client,
            finals=Finals(),
            fences=NoFences(),
            worker="test-host:1",
            coalescer=self.coalescer,
            slots=MemorySlots(lambda: self.now, lease_s=30.0, waiter_ttl_s=120.0),
            bulks=MemoryBulkChildren(lambda: self.now),
            watch=MemoryWatch(lambda: self.now),
            on_final=lambda _outcome: None,
            clock=self,  # time() and monotonic() below: a Clock
            sleep=lambda _s: None,
        )

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def deliver(self, kwargs: dict[str, Any]) -> Plan:
        return handle_delivery(Delivery((), kwargs, "task-1"), self.deps)

    def wait_out(self, plan: Plan) -> dict[str, Any]:
        """Let the re-queue's countdown pass (hops included) and return the next message's kwargs."""
        assert isinstance(plan.then, Requeue)
        kwargs = plan.then.kwargs
        state = RetryState.from_kwargs(kwargs[RETRY_STATE_KWARG], now=self.now)
        self.now = max(self.now + plan.then.countdown_s, state.not_before or 0.0)
        return kwargs


def test_acceptance_records_v0_and_the_targets_and_waits_without_a_final() -> None:
    """until=distributed: accepted is not the end; a distributing event and a re-queue carrying V0 and the DPs."""
    world = World()
    plan = world.deliver(dict(REQUEST))
    (event,) = plan.outcomes
    assert (event.status, event.final, event.source_version_before) == ("distributing", False, V0)
    assert isinstance(plan.then, Requeue) and plan.then.state == FOLLOWING_TO_DPS
    assert plan.then.countdown_s == 60
    follow = plan.then.kwargs[RETRY_STATE_KWARG]["follow"]
    assert follow["v0"] == V0 and follow["v1"] is None
    assert sorted(follow["targets"]) == sorted(nal(dp) for dp in DPS)


def test_a_followed_request_never_joins_another_pending_refresh() -> None:
    """A joined request ends with its leader's final: one that must be followed refreshes on its own."""
    world = World()
    world.coalescer.claim("PS1", "PS100001", "someone-else", {}, ttl_s=60)
    plan = world.deliver(dict(REQUEST))
    assert world.client.invokes == 1 and plan.outcomes[0].status == "distributing"
    assert world.coalescer.current_leader("PS1", "PS100001") == "someone-else"
    assert world.coalescer.pending_followers("someone-else") == ()


def test_polls_end_distributed_only_once_every_dp_is_at_v1() -> None:
    """SourceVersion rises, rows still at V0 in State 0 wait (the trap), then all at V1: one distributed final."""
    world = World()
    kwargs = world.wait_out(world.deliver(dict(REQUEST)))
    plan = world.deliver(kwargs)  # DistMgr has not processed it yet
    assert isinstance(plan.then, Requeue) and plan.outcomes == ()
    world.client.version = V0 + 1
    plan = world.deliver(world.wait_out(plan))  # V1, rows still at V0 in State 0
    assert isinstance(plan.then, Requeue)
    assert all(o.status == "distributing" for o in plan.outcomes)
    world.client.rows = [row(dp, DpState.INSTALLED, V0 + 1) for dp in DPS]
    plan = world.deliver(world.wait_out(plan))
    (final,) = plan.outcomes
    assert isinstance(plan.then, Done)
    assert (final.status, final.source_version_before, final.source_version_after) == ("distributed", V0, V0 + 1)
    assert world.client.invokes == 1


def test_polls_back_off_and_a_long_wait_hops_below_the_longest_countdown() -> None:
    """Intervals double from first_poll_s; past limits.max_countdown_s (900) the wait is split into hops."""
    world = World()
    plan = world.deliver(dict(REQUEST))
    waits = []
    for _ in range(6):
        assert isinstance(plan.then, Requeue)
        waits.append(plan.then.countdown_s)
        plan = world.deliver(world.wait_out(plan))
    assert waits[:5] == [60, 60, 120, 240, 480]
    assert max(waits) <= SETTINGS.limits.max_countdown_s


def test_the_deadline_ends_the_request_timed_out() -> None:
    """SourceVersion never rising: after deadline_s, one distribution_timed_out final, no further re-queue."""
    world = World()
    plan = world.deliver(dict(REQUEST))
    for _ in range(50):
        if isinstance(plan.then, Done):
            break
        plan = world.deliver(world.wait_out(plan))
    (final,) = plan.outcomes
    assert final.status == "distribution_timed_out" and final.distribution is not None
    assert final.distribution["phase"] == "source"


def test_a_package_without_source_version_ends_accepted_instead_of_following_blindly() -> None:
    """No V0 to compare with: the request cannot be followed, and says so by ending `accepted`."""
    world = World()
    world.client = replace(world.client, version=None)  # a provider that omits it
    plan = world.deliver(dict(REQUEST))
    (final,) = plan.outcomes
    assert final.status == "accepted" and isinstance(plan.then, Done)


class _RequeuedError(Exception):
    pass


class _Sink:
    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def publish(self, outcome: Outcome, *, message_key: str | None = None) -> bool:
        self.outcomes.append(outcome)
        return True


def _requeue(_kwargs: Any, _countdown_s: float) -> NoReturn:
    raise _RequeuedError


def test_a_distributing_event_is_told_to_on_event_once_published() -> None:
    """A bulk follows its children there: the event reaches `on_event` after the sink has it."""
    world, sink, told = World(), _Sink(), []
    deps = replace(world.deps, on_event=lambda outcome: told.append((outcome.status, len(sink.outcomes))))
    with pytest.raises(_RequeuedError):
        run_delivery(Delivery((), dict(REQUEST), "task-1"), deps, sink, _requeue, control_flow=(_RequeuedError,))
    assert told == [("distributing", 1)]


def test_an_on_event_that_fails_changes_nothing_of_the_delivery() -> None:
    """Best effort: the event stands, the request is re-queued as planned, no internal final."""
    world, sink = World(), _Sink()

    def broken(_outcome: Outcome) -> None:
        raise ConnectionError("bulk store down")

    with pytest.raises(_RequeuedError):
        deps = replace(world.deps, on_event=broken)
        run_delivery(Delivery((), dict(REQUEST), "task-1"), deps, sink, _requeue, control_flow=(_RequeuedError,))
    assert [o.status for o in sink.outcomes] == ["distributing"]
