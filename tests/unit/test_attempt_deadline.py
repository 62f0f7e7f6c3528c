"""An attempt's deadline bounds everything in it: the Invoke, the in-call retries, the verification wait."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from config.settings import RetryPolicy
from errors import ConnectError, OperationTimeoutError
from worker.domain.deadline import Deadline
from worker.domain.packages import PackageInfo
from worker.retry import in_call_retrying
from worker.usecase.attempt import attempt_refresh
from worker.usecase.values import FenceSnapshot

PLAIN = PackageInfo(class_name="SMS_Package", package_id="PS100001", name="7-Zip", pkg_source_flag=2, source_version=4)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


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


def test_an_in_call_retry_that_would_not_fit_before_the_deadline_is_not_made() -> None:
    """Three tries allowed, 2 s apart, 3 s left: one retry fits, the next does not; the error surfaces."""
    clock = FakeClock()
    calls: list[float] = []

    def refused() -> None:
        calls.append(clock.now)
        raise ConnectError("connection refused")

    policy = RetryPolicy(max_attempts=5, initial_backoff_s=2.0, max_backoff_s=2.0, multiplier=1.0, jitter=0.0)
    retrying = in_call_retrying(policy, sleep=clock.sleep, deadline=Deadline(3.0, clock))
    with pytest.raises(ConnectError):
        retrying(refused)
    assert calls == [0.0, 2.0]


def test_a_deadline_within_a_budget_is_the_sooner_of_the_two() -> None:
    """`within` keeps the earlier end; `remaining_s` never goes below zero."""
    clock = FakeClock()
    deadline = Deadline(10.0, clock)
    assert deadline.within(4.0).at_s == 4.0 and deadline.within(20.0).at_s == 10.0
    clock.sleep(12.0)
    assert deadline.remaining_s() == 0.0 and deadline.expired()
