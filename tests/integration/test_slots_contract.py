"""The provider slots' contract: ProviderSlots on a real Redis and its stand-in answer alike.

Every scenario runs against both (worker/stores/slots.py, testing/standins/slots.py); time is
the `now_s` each call passes.
"""

from __future__ import annotations

from typing import Protocol

import pytest
import redis

from testing.standins import MemorySlots
from worker.stores.slots import ProviderSlots
from worker.usecase.values import (
    PRIORITY_BULK,
    PRIORITY_FOLLOW_UP,
    PRIORITY_SINGLE,
    AcquireResult,
    Granted,
    Lease,
    Wait,
)

pytestmark = pytest.mark.integration

SITE = "PS1"
T0 = 1_000_000.0
LEASE_S, WAITER_TTL_S, MIN_RETRY_S, MAX_RETRY_S = 30.0, 120.0, 1.0, 60.0


class SlotsUnderTest(Protocol):
    def try_acquire(
        self, site_code: str, holder_id: str, limit: int, *, priority: int, now_s: float | None = None
    ) -> AcquireResult: ...

    def release(self, lease: Lease, *, now_s: float | None = None) -> bool: ...

    def renew(self, lease: Lease, *, now_s: float | None = None) -> Lease | None: ...

    def abandon(self, site_code: str, holder_id: str) -> bool: ...


@pytest.fixture(params=["redis", "memory"])
def slots(request: pytest.FixtureRequest) -> SlotsUnderTest:
    if request.param == "memory":
        return MemorySlots(
            lambda: T0,
            lease_s=LEASE_S,
            waiter_ttl_s=WAITER_TTL_S,
            min_retry_after_s=MIN_RETRY_S,
            max_retry_after_s=MAX_RETRY_S,
        )
    client: redis.Redis = request.getfixturevalue("redis_client")
    return ProviderSlots(
        client,
        request.getfixturevalue("redis_keys"),
        lease_s=LEASE_S,
        waiter_ttl_s=WAITER_TTL_S,
        min_retry_after_s=MIN_RETRY_S,
        max_retry_after_s=MAX_RETRY_S,
    )


def grant(result: AcquireResult) -> Lease:
    assert isinstance(result, Granted), result
    return result.lease


def wait(result: AcquireResult) -> Wait:
    assert isinstance(result, Wait), result
    return result


def test_slots_are_granted_up_to_the_limit_and_the_next_caller_waits_first_in_line(slots: SlotsUnderTest) -> None:
    """Two slots: two leases, then a Wait at rank 0 with both slots in use and one waiter."""
    first = grant(slots.try_acquire(SITE, "a", 2, priority=PRIORITY_SINGLE, now_s=T0))
    grant(slots.try_acquire(SITE, "b", 2, priority=PRIORITY_SINGLE, now_s=T0))
    answer = wait(slots.try_acquire(SITE, "c", 2, priority=PRIORITY_SINGLE, now_s=T0 + 1))
    assert (answer.rank, answer.in_use, answer.waiting) == (0, 2, 1)
    assert (first.site_code, first.holder_id, first.acquired_at_s, first.expires_at_s) == (SITE, "a", T0, T0 + 30)


def test_asking_again_while_holding_renews_the_same_lease(slots: SlotsUnderTest) -> None:
    """A redelivered holder gets its own lease back (same token and start), expiring later."""
    lease = grant(slots.try_acquire(SITE, "a", 1, priority=PRIORITY_SINGLE, now_s=T0))
    again = grant(slots.try_acquire(SITE, "a", 1, priority=PRIORITY_SINGLE, now_s=T0 + 10))
    assert (again.token, again.acquired_at_s, again.expires_at_s) == (lease.token, T0, T0 + 40)


def test_the_line_is_ordered_by_priority_then_arrival(slots: SlotsUnderTest) -> None:
    """A later single request goes before an earlier bulk child; a follow-up before both."""
    held = grant(slots.try_acquire(SITE, "holder", 1, priority=PRIORITY_SINGLE, now_s=T0))
    assert wait(slots.try_acquire(SITE, "bulk", 1, priority=PRIORITY_BULK, now_s=T0 + 1)).rank == 0
    assert wait(slots.try_acquire(SITE, "single-1", 1, priority=PRIORITY_SINGLE, now_s=T0 + 2)).rank == 0
    assert wait(slots.try_acquire(SITE, "single-2", 1, priority=PRIORITY_SINGLE, now_s=T0 + 3)).rank == 1
    assert wait(slots.try_acquire(SITE, "follow-up", 1, priority=PRIORITY_FOLLOW_UP, now_s=T0 + 4)).rank == 0
    assert wait(slots.try_acquire(SITE, "bulk", 1, priority=PRIORITY_BULK, now_s=T0 + 5)).rank == 3
    assert slots.release(held, now_s=T0 + 6)
    assert wait(slots.try_acquire(SITE, "single-1", 1, priority=PRIORITY_SINGLE, now_s=T0 + 7)).rank == 1
    grant(slots.try_acquire(SITE, "follow-up", 1, priority=PRIORITY_FOLLOW_UP, now_s=T0 + 8))


def test_a_waiter_keeps_its_place_only_while_it_polls(slots: SlotsUnderTest) -> None:
    """A waiter silent for the waiter TTL leaves the line; the one behind it moves up."""
    held = grant(slots.try_acquire(SITE, "holder", 1, priority=PRIORITY_SINGLE, now_s=T0))
    wait(slots.try_acquire(SITE, "silent", 1, priority=PRIORITY_SINGLE, now_s=T0))
    wait(slots.try_acquire(SITE, "polling", 1, priority=PRIORITY_SINGLE, now_s=T0))
    for elapsed_s in (25, 50):
        assert slots.renew(held, now_s=T0 + elapsed_s) is not None
    assert wait(slots.try_acquire(SITE, "polling", 1, priority=PRIORITY_SINGLE, now_s=T0 + 60)).rank == 1
    for elapsed_s in (75, 100):
        assert slots.renew(held, now_s=T0 + elapsed_s) is not None
    answer = wait(slots.try_acquire(SITE, "polling", 1, priority=PRIORITY_SINGLE, now_s=T0 + 120))
    assert (answer.rank, answer.waiting) == (0, 1)


def test_an_expired_lease_is_reclaimed_by_the_next_caller(slots: SlotsUnderTest) -> None:
    """A holder that stopped renewing loses its slot once the lease runs out; its release and renew fail."""
    dead = grant(slots.try_acquire(SITE, "dead", 1, priority=PRIORITY_SINGLE, now_s=T0))
    wait(slots.try_acquire(SITE, "next", 1, priority=PRIORITY_SINGLE, now_s=T0 + 29))
    grant(slots.try_acquire(SITE, "next", 1, priority=PRIORITY_SINGLE, now_s=T0 + 30))
    assert slots.renew(dead, now_s=T0 + 31) is None
    assert not slots.release(dead, now_s=T0 + 31)


def test_a_renewed_lease_outlives_its_first_expiry(slots: SlotsUnderTest) -> None:
    """Renewing moves the expiry `lease_s` past now: the slot is still held after the first expiry."""
    lease = grant(slots.try_acquire(SITE, "a", 1, priority=PRIORITY_SINGLE, now_s=T0))
    renewed = slots.renew(lease, now_s=T0 + 20)
    assert renewed is not None and renewed.expires_at_s == T0 + 50
    assert wait(slots.try_acquire(SITE, "b", 1, priority=PRIORITY_SINGLE, now_s=T0 + 40)).in_use == 1


def test_a_release_counts_once_and_only_for_the_lease_it_names(slots: SlotsUnderTest) -> None:
    """A second release, or one with a stale token after a new grant, gives nothing back."""
    lease = grant(slots.try_acquire(SITE, "a", 1, priority=PRIORITY_SINGLE, now_s=T0))
    assert slots.release(lease, now_s=T0 + 1)
    assert not slots.release(lease, now_s=T0 + 1)
    newer = grant(slots.try_acquire(SITE, "a", 1, priority=PRIORITY_SINGLE, now_s=T0 + 2))
    assert newer.token != lease.token and not slots.release(lease, now_s=T0 + 3)
    assert wait(slots.try_acquire(SITE, "b", 1, priority=PRIORITY_SINGLE, now_s=T0 + 3)).in_use == 1


def test_a_waiter_that_abandons_leaves_the_line_at_once(slots: SlotsUnderTest) -> None:
    """Abandoning is True once; the waiter behind moves up."""
    grant(slots.try_acquire(SITE, "holder", 1, priority=PRIORITY_SINGLE, now_s=T0))
    wait(slots.try_acquire(SITE, "quitter", 1, priority=PRIORITY_SINGLE, now_s=T0))
    wait(slots.try_acquire(SITE, "stayer", 1, priority=PRIORITY_SINGLE, now_s=T0))
    assert slots.abandon(SITE, "quitter") and not slots.abandon(SITE, "quitter")
    assert wait(slots.try_acquire(SITE, "stayer", 1, priority=PRIORITY_SINGLE, now_s=T0 + 1)).rank == 0


def test_the_retry_estimate_learns_from_hold_times_and_release_gaps(slots: SlotsUnderTest) -> None:
    """Holds of 10 s then 4 s (EWMA 8.8 s) and a 4 s gap between releases: the next waiter polls in 8.8 s."""
    first = grant(slots.try_acquire(SITE, "a", 1, priority=PRIORITY_SINGLE, now_s=T0))
    assert wait(slots.try_acquire(SITE, "b", 1, priority=PRIORITY_SINGLE, now_s=T0)).retry_after_s == 30.0
    assert slots.release(first, now_s=T0 + 10)
    second = grant(slots.try_acquire(SITE, "b", 1, priority=PRIORITY_SINGLE, now_s=T0 + 10))
    assert wait(slots.try_acquire(SITE, "c", 1, priority=PRIORITY_SINGLE, now_s=T0 + 10)).retry_after_s == 10.0
    assert slots.release(second, now_s=T0 + 14)
    grant(slots.try_acquire(SITE, "c", 1, priority=PRIORITY_SINGLE, now_s=T0 + 14))
    answer = wait(slots.try_acquire(SITE, "d", 1, priority=PRIORITY_SINGLE, now_s=T0 + 14))
    assert answer.retry_after_s == pytest.approx(8.8)
