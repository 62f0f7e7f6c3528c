"""The provider slots' contract: ProviderSlots on a real Redis and its stand-in answer alike.

Every scenario runs against both (worker/stores/slots.py, testing/standins/slots.py); time is
the `now_s` each call passes.
"""

from __future__ import annotations

import itertools
from typing import Protocol

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testing.standins import MemorySlots
from worker.stores.slots import ProviderSlots, publish_wake, wake_payload
from worker.usecase.values import (
    PRIORITY_BULK,
    PRIORITY_FOLLOW_UP,
    PRIORITY_SINGLE,
    AcquireResult,
    Granted,
    Lease,
    Parked,
    SweepResult,
    Wait,
)

pytestmark = pytest.mark.integration

SITE = "PS1"
T0 = 1_000_000.0
LEASE_S, WAITER_TTL_S, MIN_RETRY_S, MAX_RETRY_S = 30.0, 120.0, 1.0, 60.0


class SlotsUnderTest(Protocol):
    def try_acquire(
        self,
        site_code: str,
        holder_id: str,
        limit: int,
        *,
        priority: int,
        join: bool = True,
        now_s: float | None = None,
    ) -> AcquireResult: ...

    def park(
        self, site_code: str, holder_id: str, limit: int, *, priority: int, wake: str, now_s: float | None = None
    ) -> Parked: ...

    def leave(self, site_code: str, holder_id: str, *, now_s: float | None = None) -> bool: ...

    def sweep(self, site_code: str, limit: int, *, now_s: float | None = None) -> SweepResult: ...

    def release(self, lease: Lease, *, now_s: float | None = None) -> bool: ...

    def renew(self, lease: Lease, *, now_s: float | None = None) -> Lease | None: ...

    def abandon(self, site_code: str, holder_id: str) -> bool: ...


# What releases sent back, per store under test: the payloads of the publish-kind wake records.
_WOKEN: dict[int, list[str]] = {}


@pytest.fixture(params=["redis", "memory"])
def slots(request: pytest.FixtureRequest) -> SlotsUnderTest:
    store: SlotsUnderTest
    if request.param == "memory":
        memory = MemorySlots(
            lambda: T0,
            lease_s=LEASE_S,
            waiter_ttl_s=WAITER_TTL_S,
            min_retry_after_s=MIN_RETRY_S,
            max_retry_after_s=MAX_RETRY_S,
        )
        _WOKEN[id(memory)] = _PayloadsOf(memory.woken)
        return memory
    client: redis.Redis = request.getfixturevalue("redis_client")
    sent: list[str] = []
    store = ProviderSlots(
        client,
        request.getfixturevalue("redis_keys"),
        lease_s=LEASE_S,
        waiter_ttl_s=WAITER_TTL_S,
        min_retry_after_s=MIN_RETRY_S,
        max_retry_after_s=MAX_RETRY_S,
        publish_wake=sent.append,
    )
    _WOKEN[id(store)] = sent
    return store


class _PayloadsOf(list[str]):
    """The stand-in's wake records (whole), read as the payloads the Redis store hands its publisher."""

    def __init__(self, records: list[str]) -> None:
        super().__init__()
        self._records = records

    def drain(self) -> list[str]:
        payloads = [wake_payload(record) or "" for record in self._records]
        self._records.clear()
        return payloads


def woken(slots: SlotsUnderTest) -> list[str]:
    """The requests woken since the last look, in wake order."""
    sent = _WOKEN[id(slots)]
    if isinstance(sent, _PayloadsOf):
        return sent.drain()
    taken = list(sent)
    sent.clear()
    return taken


def park(slots: SlotsUnderTest, holder: str, limit: int, priority: int, now_s: float) -> Parked:
    return slots.park(SITE, holder, limit, priority=priority, wake=publish_wake(holder), now_s=now_s)


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


# -- parked requests: woken by the release, never polling ------------------------------------------


def test_the_parked_head_is_woken_ahead_and_the_release_grants_it_the_slot(slots: SlotsUnderTest) -> None:
    """Next in line (within half the limit): its message goes back before its slot is free; the slot
    goes straight to it on release, its message not sent again; its delivery claims the same lease."""
    held = grant(slots.try_acquire(SITE, "holder", 1, priority=PRIORITY_SINGLE, now_s=T0))
    assert isinstance(slots.try_acquire(SITE, "p", 1, priority=PRIORITY_SINGLE, join=False, now_s=T0), Wait)
    parked = park(slots, "p", 1, PRIORITY_SINGLE, T0)
    assert (parked.woken, parked.rank, parked.in_use, parked.waiting) == (False, 0, 1, 1)
    assert woken(slots) == ["p"]
    assert slots.release(held, now_s=T0 + 2)
    assert woken(slots) == []
    claimed = grant(slots.try_acquire(SITE, "p", 1, priority=PRIORITY_SINGLE, join=False, now_s=T0 + 3))
    assert claimed.acquired_at_s == T0 + 2
    assert isinstance(slots.try_acquire(SITE, "newcomer", 1, priority=PRIORITY_SINGLE, join=False, now_s=T0 + 3), Wait)


def test_parked_requests_are_woken_by_priority_then_arrival_and_newcomers_wait_behind(
    slots: SlotsUnderTest,
) -> None:
    """Bulk parked first, then two singles: the singles get the slots first; a newcomer never takes a
    freed slot. The bulk, alone in line when it parked, was woken ahead (half of limit 2): its slot
    comes after the singles', without a second message."""
    leases = [grant(slots.try_acquire(SITE, h, 2, priority=PRIORITY_SINGLE, now_s=T0)) for h in ("h1", "h2")]
    park(slots, "bulk", 2, PRIORITY_BULK, T0 + 1)
    assert woken(slots) == ["bulk"]
    park(slots, "single-1", 2, PRIORITY_SINGLE, T0 + 2)
    park(slots, "single-2", 2, PRIORITY_SINGLE, T0 + 3)
    assert woken(slots) == []
    slots.release(leases[0], now_s=T0 + 4)
    assert isinstance(slots.try_acquire(SITE, "newcomer", 2, priority=PRIORITY_SINGLE, join=False, now_s=T0 + 4), Wait)
    slots.release(leases[1], now_s=T0 + 5)
    assert woken(slots) == ["single-1", "single-2"]
    first = grant(slots.try_acquire(SITE, "single-1", 2, priority=PRIORITY_SINGLE, join=False, now_s=T0 + 6))
    slots.release(first, now_s=T0 + 7)
    assert woken(slots) == []
    assert grant(
        slots.try_acquire(SITE, "bulk", 2, priority=PRIORITY_BULK, join=False, now_s=T0 + 8)
    ).acquired_at_s == (T0 + 7)


def test_a_request_parking_when_a_slot_is_free_is_woken_at_once(slots: SlotsUnderTest) -> None:
    """A release between its look and its park: parking finds the slot and wakes it, nothing waits."""
    held = grant(slots.try_acquire(SITE, "holder", 1, priority=PRIORITY_SINGLE, now_s=T0))
    assert isinstance(slots.try_acquire(SITE, "late", 1, priority=PRIORITY_SINGLE, join=False, now_s=T0), Wait)
    slots.release(held, now_s=T0 + 1)
    assert woken(slots) == []
    assert park(slots, "late", 1, PRIORITY_SINGLE, T0 + 1).woken
    assert woken(slots) == ["late"]


def test_a_wake_never_claimed_is_sent_again_when_its_lease_lapses(slots: SlotsUnderTest) -> None:
    """The woken message was lost: at lease expiry the sweep sends it again, the slot still reserved for it."""
    held = grant(slots.try_acquire(SITE, "holder", 1, priority=PRIORITY_SINGLE, now_s=T0))
    park(slots, "lost", 1, PRIORITY_SINGLE, T0)
    slots.release(held, now_s=T0 + 1)
    assert woken(slots) == ["lost"]
    assert slots.sweep(SITE, 1, now_s=T0 + 1 + LEASE_S - 1) == SweepResult(in_use=1, waiting=0, parked=1)
    assert woken(slots) == []
    assert slots.sweep(SITE, 1, now_s=T0 + 1 + LEASE_S).in_use == 1
    assert woken(slots) == ["lost"]
    grant(slots.try_acquire(SITE, "lost", 1, priority=PRIORITY_SINGLE, join=False, now_s=T0 + 40))
    assert slots.sweep(SITE, 1, now_s=T0 + 41) == SweepResult(in_use=1, waiting=0, parked=0)


def test_a_dead_holders_slot_goes_to_the_parked_line_at_the_sweep(slots: SlotsUnderTest) -> None:
    """No release ever comes from a SIGKILLed holder: its lease lapses and the sweep wakes the next request."""
    grant(slots.try_acquire(SITE, "dead", 1, priority=PRIORITY_SINGLE, now_s=T0))
    park(slots, "next", 1, PRIORITY_SINGLE, T0)
    assert woken(slots) == ["next"]  # woken ahead
    slots.sweep(SITE, 1, now_s=T0 + LEASE_S - 1)
    assert isinstance(slots.try_acquire(SITE, "next", 1, priority=PRIORITY_SINGLE, join=False, now_s=T0 + 1), Wait)
    slots.sweep(SITE, 1, now_s=T0 + LEASE_S)
    assert woken(slots) == []
    grant(slots.try_acquire(SITE, "next", 1, priority=PRIORITY_SINGLE, join=False, now_s=T0 + LEASE_S + 1))


def test_leaving_gives_a_woken_slot_to_the_next_in_line(slots: SlotsUnderTest) -> None:
    """A woken request that ended before needing its slot leaves: the next parked request (woken
    ahead when the slot went to the first) gets the slot."""
    held = grant(slots.try_acquire(SITE, "holder", 1, priority=PRIORITY_SINGLE, now_s=T0))
    park(slots, "ended", 1, PRIORITY_SINGLE, T0)
    park(slots, "next", 1, PRIORITY_SINGLE, T0)
    assert woken(slots) == ["ended"]
    slots.release(held, now_s=T0 + 1)
    assert woken(slots) == ["next"]
    assert slots.leave(SITE, "ended", now_s=T0 + 2) and not slots.leave(SITE, "ended", now_s=T0 + 2)
    assert woken(slots) == []
    grant(slots.try_acquire(SITE, "next", 1, priority=PRIORITY_SINGLE, join=False, now_s=T0 + 3))


def test_a_polling_follow_up_at_the_head_keeps_the_freed_slot_for_its_next_look(slots: SlotsUnderTest) -> None:
    """A verifying Get outranks parked requests: the release wakes nobody, the Get's poll takes the slot."""
    held = grant(slots.try_acquire(SITE, "holder", 1, priority=PRIORITY_SINGLE, now_s=T0))
    park(slots, "parked", 1, PRIORITY_SINGLE, T0)
    assert woken(slots) == ["parked"]  # woken ahead while it was next
    wait(slots.try_acquire(SITE, "follow-up", 1, priority=PRIORITY_FOLLOW_UP, now_s=T0 + 1))
    slots.release(held, now_s=T0 + 2)
    assert woken(slots) == []
    get = grant(slots.try_acquire(SITE, "follow-up", 1, priority=PRIORITY_FOLLOW_UP, now_s=T0 + 3))
    slots.release(get, now_s=T0 + 4)
    assert woken(slots) == []
    grant(slots.try_acquire(SITE, "parked", 1, priority=PRIORITY_SINGLE, join=False, now_s=T0 + 5))


_SITES = itertools.count(1)


def _claim_woken(slots: SlotsUnderTest, site: str, now: float, holding: dict[str, Lease], parked: set[str]) -> None:
    """Each woken request's message comes back: it claims its slot, or, woken ahead of a slot not
    free yet, parks again (as its delivery does once its wait in the thread is over)."""
    for claimed in woken(slots):
        answer = slots.try_acquire(site, claimed, 2, priority=PRIORITY_SINGLE, join=False, now_s=now)
        if claimed in parked and isinstance(answer, Granted):
            holding[claimed] = answer.lease
            parked.discard(claimed)
        elif claimed in parked:
            slots.park(site, claimed, 2, priority=PRIORITY_SINGLE, wake=publish_wake(claimed), now_s=now)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["park", "release", "sweep", "leave"]), st.integers(0, 7), st.integers(0, 40)),
        max_size=40,
    )
)
def test_holders_never_exceed_the_limit_and_every_parked_request_is_woken_in_the_end(
    slots: SlotsUnderTest, steps: list[tuple[str, int, int]]
) -> None:
    """Any interleaving of parks, releases, sweeps and leaves: at most `limit` holders; a drain wakes everyone."""
    site = f"{next(_SITES) % 4096:03X}"
    limit, now = 2, T0
    holding: dict[str, Lease] = {}
    parked: set[str] = set()
    for op, who, dt in steps:
        now += dt
        holder = f"r{who}"
        if op == "park" and holder not in holding:
            answer = slots.try_acquire(site, holder, limit, priority=PRIORITY_SINGLE, join=False, now_s=now)
            if isinstance(answer, Granted):
                holding[holder] = answer.lease
            else:
                slots.park(site, holder, limit, priority=PRIORITY_SINGLE, wake=publish_wake(holder), now_s=now)
                parked.add(holder)
        elif op == "release" and holding:
            slots.release(holding.pop(sorted(holding)[0]), now_s=now)
        elif op == "sweep":
            assert slots.sweep(site, limit, now_s=now).in_use <= limit
        elif op == "leave":
            slots.leave(site, holder, now_s=now)
            holding.pop(holder, None)
            parked.discard(holder)
        _claim_woken(slots, site, now, holding, parked)
        # Nobody renews here: a lease past its expiry is the store's to reclaim.
        live = [lease for lease in holding.values() if lease.expires_at_s > now]
        assert len(live) <= limit
    # Drain: every holder releases in turn; every parked request is woken, claims and releases.
    for _ in range(20):
        for lease in list(holding.values()):
            slots.release(lease, now_s=now)
        holding.clear()
        now += 1
        slots.sweep(site, limit, now_s=now)
        _claim_woken(slots, site, now, holding, parked)
    assert parked == set()
