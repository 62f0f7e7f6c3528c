"""BulkStore against a real redis-server: the record, the paced window, exact counts, cancel."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import redis

from testing.threads import run_in_threads
from worker.domain.ids import child_request_id
from worker.stores.bulk_store import (
    Appended,
    BulkNotFoundError,
    BulkStore,
    BulkUpdate,
    Checkin,
    ChildSpec,
)
from worker.stores.keys import RedisKeys

pytestmark = pytest.mark.integration

BULK = f"bulk-{'1' * 32}"
SITE = "PS1"
T0 = 1_700_000_000.0
CRITERIA = {"site_code": SITE, "name_pattern": "Dell *"}


@pytest.fixture
def store(redis_client: redis.Redis, redis_keys: RedisKeys) -> BulkStore:
    return BulkStore(redis_client, redis_keys)


def children(count: int, *, start: int = 0, bulk_id: str = BULK) -> Iterator[ChildSpec]:
    """Child specs generated one by one, as an enumeration streams them."""
    for number in range(start, start + count):
        package_id = f"PS1{number:05X}"
        yield ChildSpec(
            child_request_id(bulk_id, package_id),
            {"package_id": package_id, "class": "SMS_DriverPackage", "name": f"Drivers {number}", "flag": 3},
        )


def test_the_record_round_trips(store: BulkStore) -> None:
    """create() then get() gives back the typed record: site, state, criteria, start time, no counts."""
    created = store.create(BULK, "ps1", CRITERIA, now_s=T0)
    assert created == store.get(BULK)
    assert created.bulk_id == BULK
    assert created.site_code == SITE
    assert created.state == "enumerating"
    assert created.criteria == CRITERIA
    assert created.started_at == datetime.fromtimestamp(T0, tz=UTC)
    assert (created.total, created.enqueued, created.pending, created.outstanding) == (None, 0, 0, 0)
    assert created.counts == {}
    assert created.finished_at is None
    assert store.get(f"bulk-{'0' * 32}") is None


def test_create_is_idempotent(store: BulkStore) -> None:
    """A redelivered create returns the existing record and resets nothing."""
    store.create(BULK, SITE, CRITERIA, now_s=T0)
    store.append_pending(BULK, children(3))
    again = store.create(BULK, SITE, {"other": True}, now_s=T0 + 50)
    assert again.criteria == CRITERIA
    assert again.pending == 3
    assert again.started_at == datetime.fromtimestamp(T0, tz=UTC)


def test_a_redelivered_page_is_not_queued_twice(store: BulkStore) -> None:
    """Children already appended are skipped, so an enumeration that runs twice queues each child once."""
    store.create(BULK, SITE, CRITERIA)
    assert store.append_pending(BULK, children(500)) == Appended(500, accepting=True)
    assert store.append_pending(BULK, children(600, start=400)) == Appended(500, accepting=True)
    update = store.enumeration_done(BULK)
    assert update.record.state == "running"
    assert update.record.total == 1000
    assert update.record.pending == 1000
    assert update.last is False


def test_enumeration_streams_pages_of_any_size(
    store: BulkStore, redis_client: redis.Redis, redis_keys: RedisKeys
) -> None:
    """20,000 children from a generator arrive in batches; the dedupe set is dropped when enumeration ends."""
    store.create(BULK, SITE, CRITERIA)
    assert store.append_pending(BULK, children(20_000)).added == 20_000
    assert redis_client.scard(redis_keys.bulk_keys(BULK).children) == 20_000
    record = store.enumeration_done(BULK).record
    assert (record.total, record.pending) == (20_000, 20_000)
    assert not redis_client.exists(redis_keys.bulk_keys(BULK).children)
    assert store.append_pending(BULK, children(1, start=30_000)) == Appended(0, accepting=False)


def test_take_never_exceeds_the_window(store: BulkStore) -> None:
    """Eight threads taking and finishing children never see more than the window outstanding."""
    window, total = 7, 400
    store.create(BULK, SITE, CRITERIA)
    store.append_pending(BULK, children(total))
    store.enumeration_done(BULK)
    lock = threading.Lock()
    taken_ids: list[str] = []
    max_outstanding = 0
    lasts = 0

    def work(index: int) -> None:
        nonlocal max_outstanding, lasts
        rng = random.Random(index)
        while True:
            batch = store.take(BULK, window, max_count=rng.randint(1, 4))
            record = store.get(BULK)
            assert record is not None
            with lock:
                taken_ids.extend(child.request_id for child in batch)
                max_outstanding = max(max_outstanding, record.outstanding)
            if not batch:
                if record.pending == 0:
                    return
                continue
            for child in batch:
                update = store.child_finished(BULK, child.request_id, "accepted")
                with lock:
                    lasts += update.last

    assert run_in_threads(8, work) == []
    assert len(taken_ids) == len(set(taken_ids)) == total
    assert 1 <= max_outstanding <= window
    assert lasts == 1
    record = store.get(BULK)
    assert record is not None
    assert (record.state, record.enqueued, record.counts) == ("done", total, {"accepted": total})


def test_counts_stay_exact_when_children_finish_concurrently_and_twice(store: BulkStore) -> None:
    """1,000 children finished from 16 threads, a third of them twice: each counted once, last=True exactly once."""
    total = 1000
    store.create(BULK, SITE, CRITERIA)
    store.append_pending(BULK, children(total))
    store.enumeration_done(BULK)
    taken = store.take(BULK, total) + store.take(BULK, total)
    assert len(taken) == total
    statuses = ["accepted", "source_updated", "failed", "gave_up_medium_not_ready", "joined"]
    expected = Counter(statuses[i % len(statuses)] for i in range(total))
    deliveries = [(child.request_id, statuses[i % len(statuses)]) for i, child in enumerate(taken)]
    deliveries += [delivery for i, delivery in enumerate(deliveries) if i % 3 == 0]  # redelivered finals
    random.Random(7).shuffle(deliveries)
    lock = threading.Lock()
    updates: list[BulkUpdate] = []

    def finish(index: int) -> None:
        for request_id, status in deliveries[index::16]:
            update = store.child_finished(BULK, request_id, status)
            with lock:
                updates.append(update)

    assert run_in_threads(16, finish) == []
    assert sum(update.applied for update in updates) == total
    assert [update.last for update in updates].count(True) == 1
    final = next(update.record for update in updates if update.last)
    assert final.state == "done"
    assert final.counts == dict(expected)
    assert final.finished_children == final.total == total
    assert final.finished_at is not None
    assert store.get(BULK) == final


def test_finishing_with_refill_takes_the_next_children_in_the_same_call(store: BulkStore) -> None:
    """child_finished(refill=window) counts the child and tops the window up, never past it, until nothing is left."""
    window, total = 4, 9
    store.create(BULK, SITE, CRITERIA)
    store.append_pending(BULK, children(total))
    store.enumeration_done(BULK)
    outstanding = store.take(BULK, window)
    seen = [child.request_id for child in outstanding]
    while outstanding:
        child = outstanding.pop(0)
        update = store.child_finished(BULK, child.request_id, "accepted", refill=window)
        assert update.applied is True
        assert update.record.outstanding == len(outstanding) + len(update.taken) <= window
        outstanding.extend(update.taken)
        seen.extend(taken.request_id for taken in update.taken)
    assert len(seen) == len(set(seen)) == total
    assert update.last is True and update.taken == ()
    assert (update.record.state, update.record.enqueued, update.record.counts) == ("done", total, {"accepted": total})


def test_a_repeated_or_cancelled_finish_refills_nothing(store: BulkStore) -> None:
    """A redelivered final takes no child, and neither does any finish once the bulk is cancelled."""
    store.create(BULK, SITE, CRITERIA)
    store.append_pending(BULK, children(6))
    first, second = store.take(BULK, 2)
    assert len(store.child_finished(BULK, first.request_id, "accepted", refill=2).taken) == 1
    assert store.child_finished(BULK, first.request_id, "accepted", refill=2).taken == ()
    store.cancel(BULK)
    update = store.child_finished(BULK, second.request_id, "accepted", refill=2)
    assert update.applied is True and update.taken == ()
    assert update.record.pending == 3


def test_a_checkin_is_a_heartbeat_that_also_tells_of_a_cancel(store: BulkStore) -> None:
    """child_checkin refreshes an outstanding child's heartbeat and says whether its bulk was cancelled."""
    store.create(BULK, SITE, CRITERIA)
    store.append_pending(BULK, children(3))
    (child,) = store.take(BULK, 1, now_s=T0)
    assert store.child_checkin(BULK, child.request_id, now_s=T0 + 100) == Checkin(outstanding=True, cancelled=False)
    assert store.stalled_children(BULK, idle_s=50, now_s=T0 + 120) == []
    store.cancel(BULK)
    assert store.child_checkin(BULK, child.request_id) == Checkin(outstanding=True, cancelled=True)
    assert store.child_checkin(BULK, child_request_id(BULK, "PS1FFFFF")) == Checkin(outstanding=False, cancelled=True)


def test_children_can_run_while_enumeration_continues_and_the_bulk_ends_after_both(store: BulkStore) -> None:
    """Children finished during enumeration do not end the bulk; enumeration_done does, when nothing is left."""
    store.create(BULK, SITE, CRITERIA)
    store.append_pending(BULK, children(3))
    for child in store.take(BULK, 10):
        assert store.child_finished(BULK, child.request_id, "accepted").last is False
    update = store.enumeration_done(BULK)
    assert update.last is True
    assert update.record.state == "done"
    assert store.enumeration_done(BULK) == BulkUpdate(False, False, update.record)


def test_an_empty_bulk_ends_when_enumeration_ends(store: BulkStore) -> None:
    """A selection that matched nothing is done at once, with total 0."""
    store.create(BULK, SITE, CRITERIA)
    update = store.enumeration_done(BULK, now_s=T0)
    assert update.last is True
    assert (update.record.state, update.record.total) == ("done", 0)
    assert update.record.finished_at == datetime.fromtimestamp(T0, tz=UTC)


def test_cancel_mid_run_accounts_for_every_child(store: BulkStore) -> None:
    """Pending children are drained as cancelled, outstanding ones finish later: together they make the total."""
    total, window = 250, 40
    store.create(BULK, SITE, CRITERIA)
    store.append_pending(BULK, children(total))
    store.enumeration_done(BULK)
    running = store.take(BULK, window)
    for child in running[:10]:
        store.child_finished(BULK, child.request_id, "accepted")
    cancelled = store.cancel(BULK)
    assert cancelled.applied and not cancelled.last
    assert store.is_cancelled(BULK)
    assert store.take(BULK, window) == []
    assert store.cancel(BULK).applied is False
    drained = [child for batch in store.iter_drain_cancelled(BULK, batch=64) for child in batch]
    assert len(drained) == total - window
    lasts = [store.child_finished(BULK, child.request_id, "cancelled").last for child in drained]
    # The 30 children already running end as they would (one of them notices the cancel).
    for child in running[10:]:
        lasts.append(store.child_finished(BULK, child.request_id, "accepted").last)
    assert lasts.count(True) == 1 and lasts[-1] is True
    record = store.get(BULK)
    assert record is not None
    assert record.state == "cancelled"
    assert record.counts == {"accepted": window, "cancelled": total - window}
    assert record.finished_children == record.total == total
    assert record.over


def test_cancel_during_enumeration_closes_it(store: BulkStore) -> None:
    """A cancel while pages still arrive stops the enumerator (accepting=False) and fixes the total."""
    store.create(BULK, SITE, CRITERIA)
    store.append_pending(BULK, children(5))
    store.cancel(BULK)
    assert store.append_pending(BULK, children(5, start=5)) == Appended(0, accepting=False)
    record = store.enumeration_done(BULK).record
    assert (record.state, record.total, record.pending) == ("cancelled", 5, 5)
    lasts = [store.child_finished(BULK, c.request_id, "cancelled").last for c in store.drain_cancelled(BULK)]
    assert lasts == [False] * 4 + [True]


def test_a_cancel_with_nothing_left_ends_the_bulk_itself(store: BulkStore) -> None:
    """When every child has already finished, the cancel call is the one that ends the bulk."""
    store.create(BULK, SITE, CRITERIA)
    update = store.cancel(BULK)
    assert update.applied and update.last
    assert update.record.state == "cancelled"


def test_a_failed_enumeration_is_recorded_and_its_pending_children_drained(store: BulkStore) -> None:
    """fail() keeps the error text; pending children are drained and counted like a cancel's."""
    store.create(BULK, SITE, CRITERIA)
    store.append_pending(BULK, children(2))
    update = store.fail(BULK, "WQL enumeration failed: access denied")
    assert (update.record.state, update.record.error) == ("failed", "WQL enumeration failed: access denied")
    assert store.is_cancelled(BULK) is False
    lasts = [store.child_finished(BULK, c.request_id, "cancelled").last for c in store.drain_cancelled(BULK)]
    assert lasts == [False, True]
    record = store.get(BULK)
    assert record is not None
    assert record.state == "failed"


def test_a_child_whose_worker_died_is_found_by_its_stale_heartbeat(store: BulkStore) -> None:
    """Taken children that stop giving signs of life come back from stalled_children once, then again after idle_s."""
    store.create(BULK, SITE, CRITERIA)
    store.append_pending(BULK, children(3))
    lost, alive, done = store.take(BULK, 3, now_s=T0)
    store.child_finished(BULK, done.request_id, "accepted", now_s=T0 + 10)
    assert store.child_heartbeat(BULK, alive.request_id, now_s=T0 + 500) is True
    assert store.child_heartbeat(BULK, done.request_id, now_s=T0 + 500) is False
    assert store.stalled_children(BULK, idle_s=600, now_s=T0 + 599) == []
    assert store.stalled_children(BULK, idle_s=600, now_s=T0 + 601) == [lost]
    assert store.stalled_children(BULK, idle_s=600, now_s=T0 + 700) == []
    assert store.stalled_children(BULK, idle_s=600, now_s=T0 + 1101) == [alive]


def test_every_bulk_key_expires(store: BulkStore, redis_client: redis.Redis, redis_keys: RedisKeys) -> None:
    """Every key of a bulk (the followed children and the stragglers rollup too) carries the bulk's TTL."""
    store.create(BULK, SITE, CRITERIA)
    store.append_pending(BULK, children(5))
    first, _ = store.take(BULK, 2)
    store.child_following(BULK, first.request_id, (("failed|DP02", 1),))
    keys = redis_keys.bulk_keys(BULK)
    assert all(redis_client.exists(key) for key in keys)
    assert all(0 < redis_client.ttl(key) <= 7 * 24 * 3600 for key in keys)


def test_operations_on_an_unknown_bulk_raise_a_clear_error(store: BulkStore) -> None:
    """Taking from, finishing a child of, or cancelling a bulk that does not exist raises BulkNotFoundError."""
    missing = f"bulk-{'9' * 32}"
    with pytest.raises(BulkNotFoundError, match="no bulk job"):
        store.take(missing, 5)
    with pytest.raises(BulkNotFoundError):
        store.child_finished(missing, f"{missing}:PS100001", "accepted")
    with pytest.raises(BulkNotFoundError):
        store.cancel(missing)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.take("bad:id", 5), "bulk id"),
        (lambda s: s.take("bulk-1", 5), "bulk id"),
        (lambda s: s.take(BULK, 0), "max_outstanding"),
        (lambda s: s.take(BULK, 5, max_count=5000), "max_count"),
        (lambda s: s.child_finished(BULK, "has space", "accepted"), "child request id"),
        (lambda s: s.child_finished(BULK, "c1", "Accepted; DROP"), "status"),
        (lambda s: s.append_pending(BULK, [ChildSpec("c 1", {})]), "child request id"),
        (lambda s: s.append_pending(BULK, [ChildSpec("c1", {"x": "y" * 10_000})]), "bytes"),
        (lambda s: s.append_pending(BULK, [ChildSpec("c1", {"x": float("nan")})]), "JSON"),
        (lambda s: s.create(BULK, SITE, {"x": object()}), "JSON"),
        (lambda s: s.stalled_children(BULK, idle_s=-1), "idle_s"),
    ],
)
def test_bad_arguments_get_a_clear_error(store: BulkStore, call: Callable[[BulkStore], object], message: str) -> None:
    """Malformed ids, statuses, oversized specs and bad windows are refused before Redis is touched."""
    store.create(BULK, SITE, CRITERIA)
    with pytest.raises(ValueError, match=message):
        call(store)


def test_child_request_ids_are_deterministic() -> None:
    """The same bulk and package always give the same child request id (package ids upper-cased)."""
    assert child_request_id(BULK, "ps10000a") == child_request_id(BULK, "PS10000A") == f"{BULK}:PS10000A"
