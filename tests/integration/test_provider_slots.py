"""ProviderSlots against a real redis-server: the cap, leases, the fair waiting line, estimates."""

from __future__ import annotations

import functools
import json
import math
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from embedded.redis_server import RedisServer
from errors import InvalidRequestError
from testing.redis_full import redis_full
from testing.slot_hammer import PROBE_SUFFIX
from testing.slot_occupancy import slot_occupancy
from testing.threads import run_in_threads
from worker.stores.keys import RedisKeys
from worker.stores.redis_client import redis_from_url
from worker.stores.redis_full import is_redis_full
from worker.stores.slots import (
    PRIORITY_BULK,
    PRIORITY_FOLLOW_UP,
    PRIORITY_SINGLE,
    Granted,
    Lease,
    ProviderSlots,
    SlotOccupancy,
    SweepResult,
    Wait,
    push_wake,
)

pytestmark = pytest.mark.integration

SITE = "PS1"
T0 = 1_000_000.0
LEASE_S = 30.0
WAITER_TTL_S = 120.0
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def slots(redis_client: redis.Redis, redis_keys: RedisKeys) -> ProviderSlots:
    return ProviderSlots(
        redis_client,
        redis_keys,
        lease_s=LEASE_S,
        waiter_ttl_s=WAITER_TTL_S,
        min_retry_after_s=1.0,
        max_retry_after_s=60.0,
        default_hold_s=30.0,
    )


Occupancy = Callable[..., SlotOccupancy]


@pytest.fixture
def occupancy(redis_client: redis.Redis, redis_keys: RedisKeys) -> Occupancy:
    """A site's live leases and waiters, read as /metrics reads them: occupancy(site, now_s=...)."""
    return functools.partial(slot_occupancy, redis_client, redis_keys)


def grant(result: Granted | Wait) -> Lease:
    assert isinstance(result, Granted), result
    return result.lease


def wait(result: Granted | Wait) -> Wait:
    assert isinstance(result, Wait), result
    return result


def test_grants_never_exceed_the_limit_under_many_threads(slots: ProviderSlots, occupancy: Occupancy) -> None:
    """12 threads cycling acquire/release on a limit of 3 never see a 4th holder; every grant is released."""
    limit, threads, cycles = 3, 12, 15
    lock = threading.Lock()
    released = threading.Condition(lock)
    holding = 0
    max_holding = 0
    grants = 0
    releases = 0

    def run(index: int) -> None:
        nonlocal holding, max_holding, grants, releases
        rng = random.Random(index)
        for cycle in range(cycles):
            holder = f"t{index}-c{cycle}"
            priority = rng.choice((PRIORITY_SINGLE, PRIORITY_BULK))
            while not isinstance(result := slots.try_acquire(SITE, holder, limit, priority=priority), Granted):
                with released:
                    released.wait(timeout=0.05)
            with lock:
                holding += 1
                grants += 1
                max_holding = max(max_holding, holding)
            # Hold the slot for a few round trips while others hammer the script.
            for _ in range(rng.randint(0, 3)):
                occupancy(SITE)
            with released:
                holding -= 1
            assert slots.release(result.lease)
            with released:
                releases += 1
                released.notify_all()

    assert run_in_threads(threads, run, timeout_s=90) == []
    assert grants == releases == threads * cycles
    assert 1 <= max_holding <= limit
    assert occupancy(SITE).in_use == 0


def test_grants_never_exceed_the_limit_across_processes(
    redis_client: redis.Redis, redis_url: str, redis_keys: RedisKeys
) -> None:
    """Four processes hammering one site see at most `limit` holders at once (a shared Redis probe counts them)."""
    limit, processes, cycles = 2, 4, 25
    commands = [
        [
            sys.executable,
            "-m",
            "testing.slot_hammer",
            "--redis-url",
            redis_url,
            "--prefix",
            redis_keys.prefix,
            "--site",
            SITE,
            "--limit",
            str(limit),
            "--cycles",
            str(cycles),
            "--name",
            f"p{i}",
        ]
        for i in range(processes)
    ]
    children = [
        subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for command in commands
    ]
    reports = []
    try:
        for child in children:
            out, err = child.communicate(timeout=90)
            assert child.returncode == 0, err[-2000:]
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
    assert sum(r["grants"] for r in reports) == sum(r["releases"] for r in reports) == processes * cycles
    assert all(r["violations"] == 0 for r in reports)
    assert max(r["max_seen"] for r in reports) <= limit
    assert int(redis_client.get(redis_keys.prefix + PROBE_SUFFIX) or 0) == 0


def test_a_dead_holders_slot_frees_itself_after_the_lease(slots: ProviderSlots, occupancy: Occupancy) -> None:
    """A holder that never releases (SIGKILLed) loses its slot after `lease_s` and cannot release it later."""
    dead = grant(slots.try_acquire(SITE, "dead", 1, priority=PRIORITY_SINGLE, now_s=T0))
    assert wait(slots.try_acquire(SITE, "next", 1, priority=PRIORITY_SINGLE, now_s=T0 + LEASE_S - 1)).rank == 0
    successor = grant(slots.try_acquire(SITE, "next", 1, priority=PRIORITY_SINGLE, now_s=T0 + LEASE_S + 0.5))
    assert successor.holder_id == "next"
    assert slots.release(dead, now_s=T0 + LEASE_S + 1) is False
    assert occupancy(SITE, now_s=T0 + LEASE_S + 1).in_use == 1


def test_a_priority_0_waiter_overtakes_queued_bulk_waiters(slots: ProviderSlots) -> None:
    """An urgent request arriving after two bulk children is first in line and gets the freed slot."""
    holder = grant(slots.try_acquire(SITE, "holder", 1, priority=PRIORITY_BULK, now_s=T0))
    assert wait(slots.try_acquire(SITE, "bulk-1", 1, priority=PRIORITY_BULK, now_s=T0 + 1)).rank == 0
    assert wait(slots.try_acquire(SITE, "bulk-2", 1, priority=PRIORITY_BULK, now_s=T0 + 2)).rank == 1
    urgent = wait(slots.try_acquire(SITE, "urgent", 1, priority=PRIORITY_SINGLE, now_s=T0 + 3))
    assert (urgent.rank, urgent.waiting) == (0, 3)
    assert slots.release(holder, now_s=T0 + 4)
    # The bulk child polls first but is not first in line: the slot stays for the urgent request.
    assert wait(slots.try_acquire(SITE, "bulk-1", 1, priority=PRIORITY_BULK, now_s=T0 + 5)).rank == 1
    assert grant(slots.try_acquire(SITE, "urgent", 1, priority=PRIORITY_SINGLE, now_s=T0 + 6)).holder_id == "urgent"


def test_waiters_of_one_priority_are_served_in_arrival_order(slots: ProviderSlots) -> None:
    """Whatever order waiters poll in, each freed slot goes to the earliest arrival still waiting."""
    now = T0
    lease = grant(slots.try_acquire(SITE, "first", 1, priority=PRIORITY_BULK, now_s=now))
    arrivals = [f"w{i}" for i in range(5)]
    for name in arrivals:
        now += 1
        wait(slots.try_acquire(SITE, name, 1, priority=PRIORITY_BULK, now_s=now))
    served: list[str] = []
    while len(served) < len(arrivals):
        now += 1
        assert slots.release(lease, now_s=now)
        lease_or_none = None
        for name in reversed([a for a in arrivals if a not in served]):  # latest arrivals poll first
            now += 0.1
            result = slots.try_acquire(SITE, name, 1, priority=PRIORITY_BULK, now_s=now)
            if isinstance(result, Granted):
                assert lease_or_none is None
                lease_or_none = result.lease
        assert lease_or_none is not None
        lease = lease_or_none
        served.append(lease.holder_id)
    assert served == arrivals


def test_several_free_slots_go_to_the_first_waiters_only(slots: ProviderSlots) -> None:
    """With two slots free and three waiters, the third cannot take one while the first two have not polled."""
    a = grant(slots.try_acquire(SITE, "a", 2, priority=PRIORITY_BULK, now_s=T0))
    b = grant(slots.try_acquire(SITE, "b", 2, priority=PRIORITY_BULK, now_s=T0))
    for i, name in enumerate(("w1", "w2", "w3")):
        wait(slots.try_acquire(SITE, name, 2, priority=PRIORITY_BULK, now_s=T0 + 1 + i))
    assert slots.release(a, now_s=T0 + 10)
    assert slots.release(b, now_s=T0 + 10)
    assert wait(slots.try_acquire(SITE, "w3", 2, priority=PRIORITY_BULK, now_s=T0 + 11)).rank == 2
    assert wait(slots.try_acquire(SITE, "newcomer", 2, priority=PRIORITY_BULK, now_s=T0 + 11)).rank == 3
    grant(slots.try_acquire(SITE, "w2", 2, priority=PRIORITY_BULK, now_s=T0 + 12))
    grant(slots.try_acquire(SITE, "w1", 2, priority=PRIORITY_BULK, now_s=T0 + 12))


def test_a_waiter_that_stops_polling_blocks_the_line_for_at_most_waiter_ttl(
    slots: ProviderSlots, occupancy: Occupancy
) -> None:
    """A first-in-line waiter that never polls again keeps its place only until `waiter_ttl_s` has passed."""
    lease = grant(slots.try_acquire(SITE, "holder", 1, priority=PRIORITY_BULK, now_s=T0))
    wait(slots.try_acquire(SITE, "ghost", 1, priority=PRIORITY_BULK, now_s=T0 + 1))
    wait(slots.try_acquire(SITE, "alive", 1, priority=PRIORITY_BULK, now_s=T0 + 2))
    assert slots.release(lease, now_s=T0 + 3)
    assert wait(slots.try_acquire(SITE, "alive", 1, priority=PRIORITY_BULK, now_s=T0 + 1 + WAITER_TTL_S - 1)).rank == 1
    late = slots.try_acquire(SITE, "alive", 1, priority=PRIORITY_BULK, now_s=T0 + 1 + WAITER_TTL_S + 0.5)
    assert grant(late).holder_id == "alive"
    assert occupancy(SITE, now_s=T0 + 1 + WAITER_TTL_S + 1).waiting == 0


def test_an_abandoning_waiter_leaves_the_line_at_once(slots: ProviderSlots) -> None:
    """`abandon` removes a waiter so the one behind it moves up without waiting for the TTL."""
    grant(slots.try_acquire(SITE, "holder", 1, priority=PRIORITY_BULK, now_s=T0))
    wait(slots.try_acquire(SITE, "quitter", 1, priority=PRIORITY_BULK, now_s=T0 + 1))
    assert wait(slots.try_acquire(SITE, "stayer", 1, priority=PRIORITY_BULK, now_s=T0 + 2)).rank == 1
    assert slots.abandon(SITE, "quitter") is True
    assert slots.abandon(SITE, "quitter") is False
    assert wait(slots.try_acquire(SITE, "stayer", 1, priority=PRIORITY_BULK, now_s=T0 + 3)).rank == 0


def test_retry_after_grows_with_rank_and_follows_the_hold_time_average(slots: ProviderSlots) -> None:
    """Waiters further back are told to come back later; the estimate is rank-based on the measured hold time."""
    limit = 2
    now = T0
    for cycle in range(3):  # teach the site a 20 s hold time
        lease = grant(slots.try_acquire(SITE, f"warm-{cycle}", limit, priority=PRIORITY_BULK, now_s=now))
        now += 20
        slots.release(lease, now_s=now)
    for name in ("h1", "h2"):
        grant(slots.try_acquire(SITE, name, limit, priority=PRIORITY_BULK, now_s=now))
    estimates = [
        wait(slots.try_acquire(SITE, f"w{rank}", limit, priority=PRIORITY_BULK, now_s=now + rank * 0.01)).retry_after_s
        for rank in range(8)
    ]
    # One slot frees every 20 s / 2 = 10 s on average; rank r needs r + 1 releases.
    assert estimates[:6] == pytest.approx([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
    assert estimates[6:] == [60.0, 60.0]  # clamped at max_retry_after_s
    assert estimates == sorted(estimates)


def test_releases_that_come_slower_than_holds_suggest_lengthen_the_waits(slots: ProviderSlots) -> None:
    """With a line, the time between releases (busy workers, late polls) sets each waiter's estimate."""
    holder = grant(slots.try_acquire(SITE, "h0", 1, priority=PRIORITY_BULK, now_s=T0))
    wait(slots.try_acquire(SITE, "w1", 1, priority=PRIORITY_BULK, now_s=T0))
    for turn in range(1, 7):  # each hold lasts 1 s, but the next waiter only takes over 5 s after the last
        slots.release(holder, now_s=T0 + 5 * (turn - 1) + 1)
        holder = grant(slots.try_acquire(SITE, f"w{turn}", 1, priority=PRIORITY_BULK, now_s=T0 + 5 * turn))
        wait(slots.try_acquire(SITE, f"w{turn + 1}", 1, priority=PRIORITY_BULK, now_s=T0 + 5 * turn))
    late = wait(slots.try_acquire(SITE, "late", 1, priority=PRIORITY_BULK, now_s=T0 + 30))
    assert late.rank == 1
    # Holds alone would say one release a second; they came 5 s apart: two releases, 10 s.
    assert late.retry_after_s == pytest.approx(10.0)


def test_release_updates_the_hold_time_average(slots: ProviderSlots) -> None:
    """Releases feed an exponentially weighted average of hold times (alpha 0.2), which a waiter's estimate uses."""
    first = grant(slots.try_acquire(SITE, "a", 3, priority=PRIORITY_BULK, now_s=T0))
    assert slots.release(first, now_s=T0 + 10)
    second = grant(slots.try_acquire(SITE, "b", 3, priority=PRIORITY_BULK, now_s=T0 + 10))
    assert slots.release(second, now_s=T0 + 30)
    # A repeated release changes nothing.
    assert slots.release(second, now_s=T0 + 100) is False
    for name in ("h1", "h2", "h3"):
        grant(slots.try_acquire(SITE, name, 3, priority=PRIORITY_BULK, now_s=T0 + 100))
    # The next slot frees after one average hold over three slots: (0.2 * 20 + 0.8 * 10) / 3 s.
    first_in_line = wait(slots.try_acquire(SITE, "w", 3, priority=PRIORITY_BULK, now_s=T0 + 100))
    assert first_in_line.retry_after_s == pytest.approx(12.0 / 3)


def test_asking_again_while_holding_returns_the_same_lease(slots: ProviderSlots, occupancy: Occupancy) -> None:
    """A redelivered request with the same holder id gets its own lease back, renewed, not a second slot."""
    first = grant(slots.try_acquire(SITE, "req-1", 2, priority=PRIORITY_SINGLE, now_s=T0))
    again = grant(slots.try_acquire(SITE, "req-1", 2, priority=PRIORITY_SINGLE, now_s=T0 + 5))
    assert (again.token, again.acquired_at_s) == (first.token, first.acquired_at_s)
    assert again.expires_at_s == pytest.approx(T0 + 5 + LEASE_S)
    assert occupancy(SITE, now_s=T0 + 5).in_use == 1


def test_a_stale_lease_cannot_release_a_newer_grant_to_the_same_holder(
    slots: ProviderSlots, occupancy: Occupancy
) -> None:
    """After a lease is reclaimed and its holder id granted again, the old lease's release is refused."""
    old = grant(slots.try_acquire(SITE, "req-1", 1, priority=PRIORITY_SINGLE, now_s=T0))
    new = grant(slots.try_acquire(SITE, "req-1", 1, priority=PRIORITY_SINGLE, now_s=T0 + LEASE_S + 1))
    assert new.token != old.token
    assert slots.release(old, now_s=T0 + LEASE_S + 2) is False
    assert occupancy(SITE, now_s=T0 + LEASE_S + 2).in_use == 1
    assert slots.release(new, now_s=T0 + LEASE_S + 3) is True


def test_sites_are_independent(slots: ProviderSlots, occupancy: Occupancy) -> None:
    """A full site does not hold back another site, and their lines and averages are separate."""
    grant(slots.try_acquire("PS1", "a", 1, priority=PRIORITY_SINGLE, now_s=T0))
    wait(slots.try_acquire("PS1", "b", 1, priority=PRIORITY_SINGLE, now_s=T0))
    other = grant(slots.try_acquire("PS2", "b", 1, priority=PRIORITY_SINGLE, now_s=T0))
    assert slots.release(other, now_s=T0 + 7)
    assert occupancy("PS1", now_s=T0 + 7) == SlotOccupancy(in_use=1, waiting=1)
    # PS2's 7 s hold teaches PS2 only: PS1, never released, still estimates the default 30 s hold.
    assert wait(slots.try_acquire("PS1", "b", 1, priority=PRIORITY_SINGLE, now_s=T0 + 7)).retry_after_s == 30.0
    grant(slots.try_acquire("PS2", "c", 1, priority=PRIORITY_SINGLE, now_s=T0 + 7))
    assert wait(slots.try_acquire("PS2", "d", 1, priority=PRIORITY_SINGLE, now_s=T0 + 7)).retry_after_s == 7.0


def test_the_redis_clock_is_used_when_no_time_is_given(slots: ProviderSlots, redis_client: redis.Redis) -> None:
    """Without `now_s` the lease is dated by Redis' TIME, so every machine shares one clock."""
    seconds, micros = redis_client.time()
    lease = grant(slots.try_acquire(SITE, "clocked", 1, priority=PRIORITY_SINGLE))
    assert lease.acquired_at_s == pytest.approx(seconds + micros / 1e6, abs=5)
    assert lease.expires_at_s == pytest.approx(lease.acquired_at_s + LEASE_S)


def test_every_slot_key_expires(slots: ProviderSlots, redis_client: redis.Redis, redis_keys: RedisKeys) -> None:
    """Holders, leases, waiters, deadlines, stats, parked records and the woken-ahead all carry a TTL:
    nothing is left forever."""
    grant(slots.try_acquire(SITE, "a", 1, priority=PRIORITY_SINGLE, now_s=T0))
    slots.park(SITE, "c", 1, priority=PRIORITY_SINGLE, wake=push_wake("q", "m"), now_s=T0)
    wait(slots.try_acquire(SITE, "b", 1, priority=PRIORITY_SINGLE, now_s=T0))
    keys = list(redis_keys.slot_keys(SITE))
    assert all(redis_client.exists(key) for key in keys)
    ttls = [redis_client.ttl(key) for key in keys]
    assert all(ttl > 0 for ttl in ttls), dict(zip(keys, ttls, strict=True))
    assert max(ttls[:2]) <= math.ceil(LEASE_S) + 61


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "limit must be"),
        ({"limit": True}, "limit must be"),
        ({"priority": 10}, "priority must be"),
        ({"priority": -1}, "priority must be"),
        ({"holder_id": "has space"}, "holder_id"),
        ({"holder_id": ""}, "holder_id"),
        ({"now_s": math.nan}, "now_s"),
        ({"now_s": -1.0}, "now_s"),
    ],
)
def test_bad_arguments_get_a_clear_error(slots: ProviderSlots, kwargs: dict[str, object], message: str) -> None:
    """Out-of-range limits and priorities, bad holder ids and bad clocks are refused before Redis is touched."""
    call: dict[str, object] = {"site_code": SITE, "holder_id": "h", "limit": 1, "priority": 0, "now_s": T0}
    call.update(kwargs)
    with pytest.raises(ValueError, match=message):
        slots.try_acquire(**call)  # type: ignore[arg-type]  # deliberately wrong types


def test_a_bad_site_code_is_refused(slots: ProviderSlots) -> None:
    """A site code that is not three letters or digits is an invalid request."""
    with pytest.raises(InvalidRequestError, match="site code"):
        slots.try_acquire("P:S1", "h", 1, priority=0)


def test_settings_that_would_lose_waiters_are_refused(redis_client: redis.Redis, redis_keys: RedisKeys) -> None:
    """A waiter TTL shorter than twice the longest retry-after would drop waiters that do as told."""
    with pytest.raises(ValueError, match="waiter_ttl_s"):
        ProviderSlots(redis_client, redis_keys, lease_s=60, waiter_ttl_s=100, max_retry_after_s=60)


def test_a_lane_caps_its_holders_apart_from_the_site_and_releases_by_its_lease(
    slots: ProviderSlots, occupancy: Occupancy
) -> None:
    """A lane of one (boot images): its second holder waits while the site still has free slots."""
    lane = "SMS_BootImagePackage"
    first = grant(slots.try_acquire(SITE, "boot-1", 1, priority=PRIORITY_SINGLE, lane=lane, now_s=T0))
    assert first.lane == lane
    assert wait(slots.try_acquire(SITE, "boot-2", 1, priority=PRIORITY_SINGLE, lane=lane, now_s=T0 + 1)).rank == 0
    site = grant(slots.try_acquire(SITE, "boot-1", 3, priority=PRIORITY_SINGLE, now_s=T0 + 1))
    assert occupancy(SITE, now_s=T0 + 1).in_use == 1  # the lane's holder is not counted twice
    assert slots.release(first, now_s=T0 + 2) and slots.release(site, now_s=T0 + 2)
    second = grant(slots.try_acquire(SITE, "boot-2", 1, priority=PRIORITY_SINGLE, lane=lane, now_s=T0 + 3))
    renewed = slots.renew(second, now_s=T0 + 4)
    assert renewed is not None and renewed.lane == lane
    assert slots.release(second, now_s=T0 + 5) and not slots.release(second, now_s=T0 + 5)


# -- parked requests, woken by the broker's own Redis ---------------------------------------------


def test_a_parked_request_next_in_line_is_woken_ahead_and_its_release_grants_without_a_second_push(
    slots: ProviderSlots, redis_client: redis.Redis, redis_keys: RedisKeys
) -> None:
    """Push kind: the message of a waiter within half the limit goes back at once, at the end of the
    queue list consumers take from next (RPUSH), before its slot is free; the release then grants
    it the slot and pushes nothing more."""
    queue = f"{redis_keys.prefix}:queue"
    redis_client.lpush(queue, "older")
    held = grant(slots.try_acquire(SITE, "holder", 1, priority=PRIORITY_SINGLE, now_s=T0))
    message = json.dumps({"body": "b", "properties": {"delivery_tag": "tag-1"}})
    parked = slots.park(SITE, "waiter", 1, priority=PRIORITY_SINGLE, wake=push_wake(queue, message), now_s=T0)
    assert not parked.woken and redis_client.lrange(queue, 0, -1) == ["older", message]
    assert slots.release(held, now_s=T0 + 1)
    assert redis_client.lrange(queue, 0, -1) == ["older", message]
    claimed = grant(slots.try_acquire(SITE, "waiter", 1, priority=PRIORITY_SINGLE, join=False, now_s=T0 + 2))
    assert claimed.acquired_at_s == T0 + 1


def test_a_release_pushes_the_message_of_a_waiter_not_woken_ahead(
    slots: ProviderSlots, redis_client: redis.Redis, redis_keys: RedisKeys
) -> None:
    """Limit 1: one waiter is woken ahead, the second is not; the release grants the first (no push)
    and wakes the second ahead; a waiter woken ahead that parks again is pushed with its slot."""
    queue = f"{redis_keys.prefix}:queue"
    held = grant(slots.try_acquire(SITE, "holder", 1, priority=PRIORITY_SINGLE, now_s=T0))
    slots.park(SITE, "first", 1, priority=PRIORITY_SINGLE, wake=push_wake(queue, "first"), now_s=T0)
    slots.park(SITE, "second", 1, priority=PRIORITY_SINGLE, wake=push_wake(queue, "second"), now_s=T0)
    assert redis_client.lrange(queue, 0, -1) == ["first"]
    assert slots.release(held, now_s=T0 + 1)
    assert redis_client.lrange(queue, 0, -1) == ["first", "second"]
    redis_client.delete(queue)
    # "second" came back before its slot was free and waited in vain: it parks its message again.
    slots.park(SITE, "second", 1, priority=PRIORITY_SINGLE, wake=push_wake(queue, "second again"), now_s=T0 + 2)
    first = grant(slots.try_acquire(SITE, "first", 1, priority=PRIORITY_SINGLE, join=False, now_s=T0 + 2))
    assert redis_client.llen(queue) == 0  # not woken ahead twice
    assert slots.release(first, now_s=T0 + 3)
    assert redis_client.lrange(queue, 0, -1) == ["second again"]


def test_a_request_woken_ahead_that_parks_again_after_its_slot_came_has_its_new_message_pushed(
    slots: ProviderSlots, redis_client: redis.Redis, redis_keys: RedisKeys
) -> None:
    """Its delivery found no slot, and a release granted it one before that delivery parked again: the
    grant pushed nothing (its message was on its way), so the park must send the new one. Before,
    nothing was sent: the slot idled, granted, until its lease lapsed (30 s) and a sweep woke it again."""
    queue = f"{redis_keys.prefix}:queue"
    held = grant(slots.try_acquire(SITE, "holder", 1, priority=PRIORITY_SINGLE, now_s=T0))
    slots.park(SITE, "woken", 1, priority=PRIORITY_SINGLE, wake=push_wake(queue, "woken"), now_s=T0)
    assert redis_client.lrange(queue, 0, -1) == ["woken"]  # woken ahead
    redis_client.delete(queue)  # its delivery has it, and finds no slot yet
    assert wait(slots.try_acquire(SITE, "woken", 1, priority=PRIORITY_SINGLE, join=False, now_s=T0 + 1)).rank == 0
    assert slots.release(held, now_s=T0 + 2)  # granted to it, nothing pushed: its delivery would claim it
    assert redis_client.llen(queue) == 0
    parked = slots.park(SITE, "woken", 1, priority=PRIORITY_SINGLE, wake=push_wake(queue, "again"), now_s=T0 + 3)
    assert parked.woken
    assert redis_client.lrange(queue, 0, -1) == ["again"]
    claimed = grant(slots.try_acquire(SITE, "woken", 1, priority=PRIORITY_SINGLE, join=False, now_s=T0 + 4))
    assert claimed.acquired_at_s == T0 + 2


def _released_to_a_waiter_whose_push_fails(
    slots: ProviderSlots, redis_client: redis.Redis, redis_keys: RedisKeys
) -> str:
    """Limit 1: "waiter" parked (woken ahead, then parked again: woken with its slot next time); its
    queue key made a string, so RPUSH onto it fails; the holder releases at T0 + 2. Returns the queue."""
    queue = f"{redis_keys.prefix}:queue"
    held = grant(slots.try_acquire(SITE, "holder", 1, priority=PRIORITY_SINGLE, now_s=T0))
    slots.park(SITE, "waiter", 1, priority=PRIORITY_SINGLE, wake=push_wake(queue, "ahead"), now_s=T0)
    slots.park(SITE, "waiter", 1, priority=PRIORITY_SINGLE, wake=push_wake(queue, "again"), now_s=T0 + 1)
    redis_client.delete(queue)
    redis_client.set(queue, "not a list")
    assert slots.release(held, now_s=T0 + 2)
    return queue


def test_a_wake_whose_push_fails_leaves_the_slot_free_and_the_request_first_in_line(
    slots: ProviderSlots, redis_client: redis.Redis, redis_keys: RedisKeys, occupancy: Occupancy
) -> None:
    """Redis refused the push after the grant's own writes (at maxmemory: memory crossed the limit in
    between; here the queue key holds a string): the grant is undone and the request keeps its place,
    so the next hand-off sends it. Before, the slot stayed granted to a message never sent for its
    whole lease (30 s)."""
    queue = _released_to_a_waiter_whose_push_fails(slots, redis_client, redis_keys)
    assert occupancy(SITE, now_s=T0 + 2).in_use == 0
    assert wait(slots.try_acquire(SITE, "newcomer", 1, priority=PRIORITY_SINGLE, join=False, now_s=T0 + 2)).rank >= 1
    redis_client.delete(queue)
    assert slots.sweep(SITE, 1, now_s=T0 + 3).in_use == 1
    assert redis_client.lrange(queue, 0, -1) == ["again"]
    claimed = grant(slots.try_acquire(SITE, "waiter", 1, priority=PRIORITY_SINGLE, join=False, now_s=T0 + 4))
    assert claimed.acquired_at_s == T0 + 3


def test_a_copy_that_claims_the_slot_its_failed_push_was_for_keeps_it(
    slots: ProviderSlots, redis_client: redis.Redis, redis_keys: RedisKeys, occupancy: Occupancy
) -> None:
    """The same call grants the head its slot, then the head's own copy (asking) claims it, and the push
    fails: the claim stands, so the slot is neither lost nor counted twice."""
    _released_to_a_waiter_whose_push_fails(slots, redis_client, redis_keys)
    claimed = grant(slots.try_acquire(SITE, "waiter", 1, priority=PRIORITY_SINGLE, join=False, now_s=T0 + 3))
    assert occupancy(SITE, now_s=T0 + 3).in_use == 1
    assert slots.release(claimed, now_s=T0 + 4)


def test_a_request_woken_ahead_gets_the_released_slot_in_its_thread(
    slots: ProviderSlots, redis_client: redis.Redis, redis_keys: RedisKeys
) -> None:
    """Its delivery waits (await_woken_slot) and the release hands it the slot at once, nothing pushed;
    one that waited in vain parks again, and a slot that came in between sends its message then."""
    queue = f"{redis_keys.prefix}:queue"
    woken = f"bulk-{'0' * 32}:PS100001"  # a bulk child's request id: its signal key takes the ":"
    held = grant(slots.try_acquire(SITE, "holder", 1, priority=PRIORITY_SINGLE))
    slots.park(SITE, woken, 1, priority=PRIORITY_SINGLE, wake=push_wake(queue, "woken"))
    assert redis_client.lrange(queue, 0, -1) == ["woken"]
    redis_client.delete(queue)
    releaser = threading.Timer(0.3, lambda: slots.release(held))
    releaser.start()
    started = time.monotonic()
    answer = slots.await_woken_slot(SITE, woken, 1, priority=PRIORITY_SINGLE, timeout_s=3.0)
    waited_s = time.monotonic() - started
    releaser.join()
    assert isinstance(answer, Granted) and 0.2 < waited_s < 2.0
    assert redis_client.llen(queue) == 0
    # The next one waits in vain (nobody releases), and the slot comes just after it gave up.
    slots.park(SITE, "late", 1, priority=PRIORITY_SINGLE, wake=push_wake(queue, "late"))
    redis_client.delete(queue)
    assert slots.await_woken_slot(SITE, "late", 1, priority=PRIORITY_SINGLE, timeout_s=0.2) is None
    slots.release(answer.lease)
    assert redis_client.llen(queue) == 0  # told its (gone) thread, not its queue
    slots.park(SITE, "late", 1, priority=PRIORITY_SINGLE, wake=push_wake(queue, "late again"))
    assert redis_client.lrange(queue, 0, -1) == ["late again"]


def test_a_wake_never_claimed_is_pushed_again_with_a_new_delivery_tag(
    slots: ProviderSlots, redis_client: redis.Redis, redis_keys: RedisKeys
) -> None:
    """The first copy may still exist (a worker took it and died): the second must not share its tag."""
    queue = f"{redis_keys.prefix}:queue"
    held = grant(slots.try_acquire(SITE, "holder", 1, priority=PRIORITY_SINGLE, now_s=T0))
    message = json.dumps({"body": "b", "properties": {"delivery_tag": "tag-1"}})
    slots.park(SITE, "waiter", 1, priority=PRIORITY_SINGLE, wake=push_wake(queue, message), now_s=T0)
    slots.release(held, now_s=T0 + 1)
    first = json.loads(str(redis_client.rpop(queue)))
    assert slots.sweep(SITE, 1, now_s=T0 + 1 + LEASE_S - 1).in_use == 1 and redis_client.llen(queue) == 0
    slots.sweep(SITE, 1, now_s=T0 + 1 + LEASE_S)
    again = json.loads(str(redis_client.rpop(queue)))
    assert first["properties"]["delivery_tag"] == "tag-1"
    assert again["properties"]["delivery_tag"].startswith("tag-1.") and again["body"] == "b"


def test_a_full_redis_neither_fails_a_release_nor_drops_anyone_from_the_line(tmp_path: Path) -> None:
    """At maxmemory (noeviction): a release frees its slot and wakes the head; a sweep raises nothing; a park
    is refused as Redis-full (its message goes back to the queue), and once there is room it parks."""
    with RedisServer(data_dir=tmp_path / "redis") as server:
        client = redis_from_url(server.url)
        store = ProviderSlots(client, RedisKeys("full"), lease_s=LEASE_S, waiter_ttl_s=WAITER_TTL_S)
        queue = "full:queue"
        held = grant(store.try_acquire(SITE, "holder", 1, priority=PRIORITY_SINGLE, now_s=T0))
        store.park(SITE, "first", 1, priority=PRIORITY_SINGLE, wake=push_wake(queue, "first"), now_s=T0)
        with redis_full(client):
            with pytest.raises(redis.RedisError) as refused:
                store.park(SITE, "second", 1, priority=PRIORITY_SINGLE, wake=push_wake(queue, "second"), now_s=T0)
            assert is_redis_full(refused.value)
            assert store.release(held, now_s=T0 + 1)
            assert store.sweep(SITE, 1, now_s=T0 + 2).in_use == 1
        assert client.lrange(queue, 0, -1) == ["first"]
        second = push_wake(queue, "second")
        assert not store.park(SITE, "second", 1, priority=PRIORITY_SINGLE, wake=second, now_s=T0 + 3).woken
        client.close()


# -- a waiter blocked in its thread (a verifying request's Get) -----------------------------------


def test_a_blocked_waiter_is_handed_the_released_slot_before_parked_requests(
    slots: ProviderSlots, redis_client: redis.Redis, redis_keys: RedisKeys
) -> None:
    """Priority first: the release wakes the blocked follow-up at once; the parked single waits for the next."""
    queue = f"{redis_keys.prefix}:queue"
    held = grant(slots.try_acquire(SITE, "holder", 1, priority=PRIORITY_SINGLE))
    slots.park(SITE, "parked", 1, priority=PRIORITY_SINGLE, wake=push_wake(queue, "parked"))
    releaser = threading.Timer(0.3, lambda: slots.release(held))
    releaser.start()
    started = time.monotonic()
    answer = slots.await_slot(SITE, "follow-up", 1, priority=PRIORITY_FOLLOW_UP, timeout_s=3.0)
    waited_s = time.monotonic() - started
    releaser.join()
    assert isinstance(answer, Granted) and 0.2 < waited_s < 2.0
    assert redis_client.lrange(queue, 0, -1) == ["parked"]  # woken ahead when it parked
    slots.release(answer.lease)
    assert redis_client.lrange(queue, 0, -1) == ["parked"]  # its slot now, no second push


def test_a_blocked_waiter_that_times_out_leaves_the_line_and_holds_nothing(
    slots: ProviderSlots, redis_client: redis.Redis, redis_keys: RedisKeys
) -> None:
    """No release within its time: None, out of the line; the next release wakes the parked request behind it."""
    queue = f"{redis_keys.prefix}:queue"
    held = grant(slots.try_acquire(SITE, "holder", 1, priority=PRIORITY_SINGLE))
    slots.park(SITE, "parked", 1, priority=PRIORITY_SINGLE, wake=push_wake(queue, "parked"))
    assert slots.await_slot(SITE, "follow-up", 1, priority=PRIORITY_FOLLOW_UP, timeout_s=0.2) is None
    slots.release(held)
    assert redis_client.lrange(queue, 0, -1) == ["parked"]
    assert slots.sweep(SITE, 1).waiting == 0


def test_a_blocked_waiters_slot_it_never_claimed_is_reclaimed_not_woken_again(
    slots: ProviderSlots, redis_keys: RedisKeys
) -> None:
    """Its thread died between the wake and the claim: the grant lapses with the lease and the slot moves on."""
    held = grant(slots.try_acquire(SITE, "holder", 1, priority=PRIORITY_SINGLE, now_s=T0))
    signal = redis_keys.slot_signal(SITE, "gone")
    slots.park(SITE, "gone", 1, priority=PRIORITY_FOLLOW_UP, wake=json.dumps({"signal": signal}), now_s=T0)
    slots.release(held, now_s=T0 + 1)
    assert slots.sweep(SITE, 1, now_s=T0 + 2).in_use == 1
    assert slots.sweep(SITE, 1, now_s=T0 + 1 + LEASE_S) == SweepResult(in_use=0, waiting=0, parked=0)
