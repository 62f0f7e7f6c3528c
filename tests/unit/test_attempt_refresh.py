"""One refresh attempt's logic (Get, Invoke, classify, verify) with a scripted provider client."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import pytest

from config.settings import RetryPolicy
from errors import MediumNotReadyError, OperationTimeoutError, ProviderFailureError, ReturnValueError, ServerBusyError
from worker.domain.deadline import Deadline
from worker.domain.packages import PackageInfo
from worker.usecase.attempt import AttemptResult, attempt_refresh
from worker.usecase.values import FenceSnapshot, landed

PLAIN = PackageInfo(class_name="SMS_Package", package_id="PS100001", name="7-Zip", pkg_source_flag=2, source_version=4)
COMPRESS = replace(PLAIN, pkg_source_flag=3)
NO_SOURCE = replace(PLAIN, pkg_source_flag=1)
T = TypeVar("T")


@dataclass
class ScriptedClient:
    """Answers Gets from a list of versions (last one repeats) and Invokes with a fixed reply."""

    package: PackageInfo
    return_value: int | Exception = 0
    versions: list[int | Exception] = field(default_factory=list)
    gets: int = 0
    invokes: int = 0

    def get_package(self, package_class: str, package_id: str, *, deadline: Deadline | None = None) -> PackageInfo:
        self.gets += 1
        if self.gets == 1 or not self.versions:
            return self.package
        version = self.versions[min(self.gets - 2, len(self.versions) - 1)]
        if isinstance(version, Exception):
            raise version
        return replace(self.package, source_version=version)

    def refresh(self, package_class: str, package_id: str, *, deadline: Deadline | None = None) -> int:
        self.invokes += 1
        if isinstance(self.return_value, Exception):
            raise self.return_value
        return self.return_value


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_return_value_zero_is_accepted_without_verification() -> None:
    """ReturnValue 0 and no verify: accepted, with the version read before, after unknown."""
    result = attempt_refresh(ScriptedClient(PLAIN), "SMS_Package", "PS100001")
    assert (result.status, result.return_value, result.source_version_before, result.source_version_after) == (
        "accepted",
        0,
        4,
        None,
    )


def test_verification_waits_until_source_version_rises() -> None:
    """With verify, Gets are polled until SourceVersion passes the version read before."""
    clock = FakeClock()
    client = ScriptedClient(PLAIN, versions=[4, 4, OperationTimeoutError("blip"), 5])
    result = attempt_refresh(
        client, "SMS_Package", "PS100001", verify_timeout_s=10, verify_poll_s=1, sleep=clock.sleep, clock=clock
    )
    assert (result.status, result.source_version_after) == ("source_updated", 5)
    assert clock.now == 3.0


def test_verification_gives_up_at_its_bound_and_stays_accepted() -> None:
    """A version that never rises ends the wait at the bound; the refresh is still accepted."""
    clock = FakeClock()
    client = ScriptedClient(PLAIN, versions=[4])
    result = attempt_refresh(
        client, "SMS_Package", "PS100001", verify_timeout_s=5, verify_poll_s=2, sleep=clock.sleep, clock=clock
    )
    assert (result.status, result.source_version_after) == ("accepted", 4)
    assert clock.now == pytest.approx(5.0)


@dataclass
class RecordingGate:
    """A gate that logs what the attempt asks of it and grants only the polls listed as free."""

    client: ScriptedClient
    free_polls: set[int] = field(default_factory=set)
    events: list[str] = field(default_factory=list)
    polls: int = 0

    def invoked(self) -> None:
        self.events.append(f"invoked after {self.client.invokes} invoke(s)")

    def run(self, operation: Callable[[], T]) -> T | None:
        self.polls += 1
        if self.polls not in self.free_polls:
            self.events.append("no slot")
            return None
        self.events.append("poll")
        return operation()


def verify_through(gate: RecordingGate, clock: FakeClock) -> AttemptResult:
    """A verified refresh of PLAIN (10 s bound, 1 s polls) whose provider slots are `gate`'s."""
    return attempt_refresh(
        gate.client,
        "SMS_Package",
        "PS100001",
        verify_timeout_s=10,
        verify_poll_s=1,
        gate=gate,
        sleep=clock.sleep,
        clock=clock,
    )


def test_the_attempts_slot_is_given_back_once_the_invoke_answers_before_any_verification() -> None:
    """Verification runs outside the attempt's slot: `invoked` comes first, then gated polls."""
    clock = FakeClock()
    client = ScriptedClient(PLAIN, versions=[5])
    gate = RecordingGate(client, free_polls={1})
    result = verify_through(gate, clock)
    assert gate.events == ["invoked after 1 invoke(s)", "poll"]
    assert (result.status, result.source_version_after) == ("source_updated", 5)


def test_a_verification_poll_without_a_free_slot_is_skipped_not_waited_for() -> None:
    """No slot for a poll: no Get, no place held in the line; the next poll comes `poll_s` later."""
    clock = FakeClock()
    client = ScriptedClient(PLAIN, versions=[5])
    gate = RecordingGate(client, free_polls={3})
    result = verify_through(gate, clock)
    assert gate.events[1:] == ["no slot", "no slot", "poll"]
    assert client.gets == 2  # the read before the Invoke, then the one granted poll
    assert result.status == "source_updated" and clock.now == 2.0


def test_an_attempt_without_verification_still_gives_its_slot_back_at_once() -> None:
    client = ScriptedClient(PLAIN)
    gate = RecordingGate(client)
    assert attempt_refresh(client, "SMS_Package", "PS100001", gate=gate).status == "accepted"
    assert gate.events == ["invoked after 1 invoke(s)"]


def test_nonzero_return_value_on_storage_compress_means_medium_not_ready() -> None:
    """Only a STORAGE_COMPRESS package waits for its medium; the ReturnValue is kept as the code."""
    with pytest.raises(MediumNotReadyError) as info:
        attempt_refresh(ScriptedClient(COMPRESS, return_value=21), "SMS_Package", "PS100001")
    assert info.value.code == 21 and info.value.retryable


def test_nonzero_return_value_elsewhere_is_a_permanent_refusal() -> None:
    """STORAGE_NO_SOURCE answers non-zero: nothing to refresh, and retrying would not change it."""
    with pytest.raises(ReturnValueError) as info:
        attempt_refresh(ScriptedClient(NO_SOURCE, return_value=50), "SMS_Package", "PS100001")
    assert not info.value.retryable and "STORAGE_NO_SOURCE" in info.value.message


def test_wmi_generic_failure_naming_error_not_ready_on_storage_compress_is_medium_not_ready() -> None:
    """WBEM_E_FAILED from RefreshPkgSource on a STORAGE_COMPRESS package, naming ERROR_NOT_READY."""
    failure = ProviderFailureError("generic failure: ERROR_NOT_READY", wmi_code=0x80041001, wsman_code=2150858752)
    with pytest.raises(MediumNotReadyError):
        attempt_refresh(ScriptedClient(COMPRESS, return_value=failure), "SMS_Package", "PS100001")


def test_wmi_generic_failure_for_another_cause_keeps_its_meaning_on_storage_compress() -> None:
    """A WBEM_E_FAILED that names no device is not retried on the medium's schedule of hours."""
    failure = ProviderFailureError("site database unreachable", wmi_code=0x80041001, wsman_code=2150858752)
    with pytest.raises(ProviderFailureError) as info:
        attempt_refresh(ScriptedClient(COMPRESS, return_value=failure), "SMS_Package", "PS100001")
    assert not isinstance(info.value, MediumNotReadyError)


def test_a_known_version_before_from_an_earlier_attempt_is_kept() -> None:
    """On a retry, the version read before the first attempt stays the reference."""
    result = attempt_refresh(ScriptedClient(PLAIN), "SMS_Package", "PS100001", known_version_before=3)
    assert result.source_version_before == 3


@dataclass
class LostReplyClient:
    """The first Invoke lands (or not) but its reply is lost; later Invokes answer 0."""

    package: PackageInfo
    lands: bool
    invokes: int = 0

    def get_package(self, package_class: str, package_id: str, *, deadline: Deadline | None = None) -> PackageInfo:
        return self.package

    def refresh(self, package_class: str, package_id: str, *, deadline: Deadline | None = None) -> int:
        self.invokes += 1
        if self.invokes == 1:
            if self.lands:
                self.package = replace(self.package, action_in_progress=1)
            raise OperationTimeoutError("read timed out")
        return 0


@dataclass
class MemoryFence:
    snapshot: FenceSnapshot | None = None

    def read(self) -> FenceSnapshot | None:
        return self.snapshot

    def write(self, snapshot: FenceSnapshot) -> None:
        self.snapshot = snapshot


IN_CALL = RetryPolicy(max_attempts=3, initial_backoff_s=0, max_backoff_s=0)


def test_an_invoke_that_timed_out_is_never_sent_again_in_the_call() -> None:
    """A timed-out Invoke may still be running at the provider: the error goes to the caller, one Invoke sent."""
    client = LostReplyClient(replace(PLAIN, action_in_progress=0), lands=False)
    fence = MemoryFence()
    with pytest.raises(OperationTimeoutError):
        attempt_refresh(client, "SMS_Package", "PS100001", fence=fence, invoke_retry=IN_CALL, sleep=lambda _s: None)
    assert client.invokes == 1
    assert fence.snapshot is not None, "the fence was written before the Invoke"


@pytest.mark.parametrize(("lands", "invokes"), [(True, 1), (False, 2)])
def test_the_next_delivery_after_a_timed_out_invoke_invokes_only_if_it_did_not_land(lands: bool, invokes: int) -> None:
    """The fence's case: the next try reads the package first; a landed refresh is not sent twice."""
    client = LostReplyClient(replace(PLAIN, action_in_progress=0), lands=lands)
    fence = MemoryFence()
    with pytest.raises(OperationTimeoutError):
        attempt_refresh(client, "SMS_Package", "PS100001", fence=fence, invoke_retry=IN_CALL, sleep=lambda _s: None)
    result = attempt_refresh(client, "SMS_Package", "PS100001", fence=fence, invoke_retry=IN_CALL)
    assert result.status == "accepted" and client.invokes == invokes
    assert result.confirmed_earlier_invoke is lands


@dataclass
class BusyOnceClient:
    """The first Invoke is refused as busy (it never ran); later Invokes answer 0."""

    package: PackageInfo
    invokes: int = 0
    gets: int = 0

    def get_package(self, package_class: str, package_id: str, *, deadline: Deadline | None = None) -> PackageInfo:
        self.gets += 1
        return self.package

    def refresh(self, package_class: str, package_id: str, *, deadline: Deadline | None = None) -> int:
        self.invokes += 1
        if self.invokes == 1:
            raise ServerBusyError("WBEM_E_OUT_OF_MEMORY")
        return 0


def test_an_invoke_refused_before_it_ran_is_retried_in_the_call_after_a_fresh_read() -> None:
    """A busy provider did not run the call: the in-call retry reads the package, then invokes again."""
    client = BusyOnceClient(replace(PLAIN, action_in_progress=0))
    result = attempt_refresh(
        client, "SMS_Package", "PS100001", fence=MemoryFence(), invoke_retry=IN_CALL, sleep=lambda _s: None
    )
    assert result.status == "accepted" and client.invokes == 2 and client.gets == 2


def _snapshot(*, version: int, action: int, refreshed: str | None = "t0") -> FenceSnapshot:
    return FenceSnapshot(source_version=version, last_refresh_time=refreshed, action_in_progress=action, written_at=1.0)


@pytest.mark.parametrize(
    ("now", "moved"),
    [
        ({"source_version": 6}, True),
        ({"last_refresh_time": "t1"}, True),
        ({"action_in_progress": 1}, True),
        ({}, False),
    ],
)
def test_a_move_after_a_fence_written_with_no_action_pending_proves_the_invoke_landed(
    now: dict[str, Any], moved: bool
) -> None:
    """With ActionInProgress 0 at fence time, a rise, a new refresh time or a new action is this call's."""
    package = replace(PLAIN, **{"source_version": 5, "last_refresh_time": "t0", "action_in_progress": 0, **now})
    assert landed(_snapshot(version=5, action=0), package) is moved


@pytest.mark.parametrize("now", [{"source_version": 6}, {"last_refresh_time": "t1"}, {"action_in_progress": 0}])
def test_nothing_proves_the_invoke_landed_when_a_refresh_was_pending_at_fence_time(now: dict[str, Any]) -> None:
    """An older refresh DistMgr was still on can bump SourceVersion from an older snapshot: invoke again."""
    package = replace(PLAIN, **{"source_version": 5, "last_refresh_time": "t0", "action_in_progress": 1, **now})
    assert landed(_snapshot(version=5, action=1), package) is False


def test_the_fence_counter_example_invokes_again() -> None:
    """B fences at (5, pending), its reply is lost, A's pass ends at 6: B's next try invokes again."""
    client = LostReplyClient(replace(PLAIN, source_version=5, action_in_progress=1), lands=False)
    fence = MemoryFence()
    with pytest.raises(OperationTimeoutError):
        attempt_refresh(client, "SMS_Package", "PS100001", fence=fence)
    client.package = replace(client.package, source_version=6, action_in_progress=0)  # A's DistMgr pass ends
    result = attempt_refresh(client, "SMS_Package", "PS100001", fence=fence)
    assert client.invokes == 2 and result.confirmed_earlier_invoke is False


# -- the attempt's deadline --------------------------------------------------------------


@dataclass
class SlowClient:
    """A provider whose every Get takes `get_s` of the fake clock; records (when, time given) per Get."""

    clock: FakeClock
    get_s: float
    invokes: int = 0
    given: list[tuple[float, float]] = field(default_factory=list)

    def get_package(self, package_class: str, package_id: str, *, deadline: Deadline | None = None) -> PackageInfo:
        assert deadline is not None, "every call of an attempt carries its deadline"
        self.given.append((self.clock.now, deadline.remaining_s()))
        self.clock.sleep(self.get_s)
        return PLAIN

    def refresh(self, package_class: str, package_id: str, *, deadline: Deadline | None = None) -> int:
        self.invokes += 1
        return 0


@dataclass
class RecordingFence:
    written: list[FenceSnapshot] = field(default_factory=list)

    def read(self) -> FenceSnapshot | None:
        return None

    def write(self, snapshot: FenceSnapshot) -> None:
        self.written.append(snapshot)


def test_the_invoke_is_not_sent_once_the_attempt_deadline_has_passed() -> None:
    """A Get that used up the attempt's time: a `timeout`, with no fence written and no Invoke sent."""
    clock = FakeClock()
    client = SlowClient(clock, get_s=6.0)
    fence = RecordingFence()
    with pytest.raises(OperationTimeoutError, match="before RefreshPkgSource"):
        attempt_refresh(client, "SMS_Package", "PS100001", fence=fence, clock=clock, deadline=Deadline(5.0, clock))
    assert client.invokes == 0 and fence.written == []


def test_verification_ends_at_the_attempt_deadline_before_its_own_bound() -> None:
    """verify_timeout_s 30 but 8 s left of the attempt: the wait ends by 8 s, no Get given time past it."""
    clock = FakeClock()
    client = SlowClient(clock, get_s=1.0)
    result = attempt_refresh(
        client,
        "SMS_Package",
        "PS100001",
        verify_timeout_s=30,
        verify_poll_s=1,
        sleep=clock.sleep,
        clock=clock,
        deadline=Deadline(8.0, clock),
    )
    assert (result.status, result.source_version_after) == ("accepted", 4)
    assert clock.now <= 8.0 + client.get_s
    assert len(client.given) > 2 and all(when + given <= 8.0 for when, given in client.given)


def test_a_deadline_within_a_budget_is_the_sooner_of_the_two() -> None:
    """`within` keeps the earlier end; `remaining_s` never goes below zero."""
    clock = FakeClock()
    deadline = Deadline(10.0, clock)
    assert deadline.within(4.0).at_s == 4.0 and deadline.within(20.0).at_s == 10.0
    clock.sleep(12.0)
    assert deadline.remaining_s() == 0.0 and deadline.expired()


def test_a_redelivery_whose_earlier_invoke_landed_verifies_against_the_version_before_it() -> None:
    """DistMgr already raised SourceVersion (5 -> 6) when the next delivery finds the fence: source_updated at once."""
    client = LostReplyClient(replace(PLAIN, source_version=5, action_in_progress=0), lands=True)
    fence = MemoryFence()
    with pytest.raises(OperationTimeoutError):
        attempt_refresh(client, "SMS_Package", "PS100001", fence=fence)
    client.package = replace(client.package, source_version=6, action_in_progress=0)  # its DistMgr pass ended
    clock = iter(range(1000)).__next__
    result = attempt_refresh(
        client, "SMS_Package", "PS100001", fence=fence, verify_timeout_s=30.0, sleep=lambda _s: None, clock=clock
    )
    assert (result.status, result.source_version_before, result.source_version_after) == ("source_updated", 5, 6)
    assert result.confirmed_earlier_invoke is True and client.invokes == 1
