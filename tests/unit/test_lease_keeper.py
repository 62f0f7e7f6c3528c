"""worker/stores/lease_keeper.py: kept leases renewed once per period; a refused renewal marks the lease lost."""

from __future__ import annotations

from worker.stores.lease_keeper import LeaseKeeper


class Renewals:
    """A renew callable that records when it ran and answers True."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.at: list[float] = []

    def __call__(self) -> bool:
        self.at.append(self.clock.now)
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_kept_lease_is_renewed_once_a_third_of_its_length_has_passed() -> None:
    """Nothing is due before the period; after it, one renewal."""
    clock = Clock()
    renewals = Renewals(clock)
    keeper = LeaseKeeper(clock=clock)
    keeper.keep("lock", renewals, lease_s=30)
    keeper.renew_due()
    assert renewals.at == []
    clock.now += 10
    keeper.renew_due()
    assert renewals.at == [110.0]


def test_a_renewal_that_finds_the_lease_gone_marks_it_lost_and_stops_renewing() -> None:
    """The lease lapsed and was taken: lost, dropped, never renewed again."""
    clock = Clock()
    keeper = LeaseKeeper(clock=clock)
    held = keeper.keep("lock", lambda: False, lease_s=3)
    clock.now += 1
    keeper.renew_due()
    assert held.lost and keeper.held_count() == 0


def test_a_failing_renewal_keeps_the_lease_and_tries_again_soon() -> None:
    """Redis away is not a lost lease: it stays kept and is retried."""
    clock, failures = Clock(), [ConnectionError("down")]

    def renew() -> bool:
        if failures:
            raise failures.pop()
        return True

    keeper = LeaseKeeper(clock=clock)
    held = keeper.keep("slot", renew, lease_s=30)
    clock.now += 10
    keeper.renew_due()
    assert not held.lost and keeper.held_count() == 1
    clock.now += 1
    keeper.renew_due()
    assert failures == [] and not held.lost and held.due_at > clock.now


def test_a_dropped_lease_is_not_renewed() -> None:
    """Released by its holder: the keeper forgets it."""
    clock = Clock()
    renewals = Renewals(clock)
    keeper = LeaseKeeper(clock=clock)
    held = keeper.keep("lock", renewals, lease_s=3)
    keeper.drop(held)
    clock.now += 10
    keeper.renew_due()
    assert renewals.at == [] and keeper.held_count() == 0


def test_a_lease_is_never_renewed_past_its_longest_hold() -> None:
    """A holder that failed to give it back does not keep it for as long as the process lives."""
    clock = Clock()
    renewals = Renewals(clock)
    keeper = LeaseKeeper(clock=clock)
    keeper.keep("lock", renewals, lease_s=3, max_hold_s=10)
    for _ in range(20):
        clock.now += 1
        keeper.renew_due()
    assert renewals.at and max(renewals.at) < 110.0
    assert keeper.held_count() == 0
