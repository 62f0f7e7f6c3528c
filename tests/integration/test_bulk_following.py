"""A bulk followed to every DP, in its store: followed children leave the window, the stragglers rollup.

Real Redis, the store's own Lua script; times are driven with `now_s` where they matter.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from worker.domain.ids import child_request_id
from worker.domain.stragglers import HELD_AT_SOURCE, UNLISTED
from worker.stores.bulk_store import BulkStore, ChildSpec
from worker.stores.keys import RedisKeys

pytestmark = pytest.mark.integration

BULK = f"bulk-{'2' * 32}"
SITE = "PS1"
CRITERIA = {"site_code": SITE, "until": "distributed"}


@pytest.fixture
def store(redis_client: redis.Redis, redis_keys: RedisKeys) -> BulkStore:
    return BulkStore(redis_client, redis_keys)


def children(count: int) -> Iterator[ChildSpec]:
    for number in range(count):
        package_id = f"PS1{number:05X}"
        yield ChildSpec(child_request_id(BULK, package_id), {"package_id": package_id})


def running_bulk(store: BulkStore, count: int, window: int) -> list[ChildSpec]:
    store.create(BULK, SITE, CRITERIA)
    store.append_pending(BULK, children(count))
    store.enumeration_done(BULK)
    return store.take(BULK, window)


def test_a_followed_child_leaves_the_window_and_its_place_is_refilled_in_the_same_call(store: BulkStore) -> None:
    """Following lasts as long as the DPs take: the window paces provider calls, not DP copies."""
    first, second = running_bulk(store, 5, window=2)
    update = store.child_following(BULK, first.request_id, (("waiting|DP01", 1),), refill=2)
    assert update.applied
    assert [child.request_id for child in update.taken] == [child_request_id(BULK, "PS100002")]
    assert (update.record.outstanding, update.record.following, update.record.pending) == (2, 1, 2)
    again = store.child_following(BULK, first.request_id, (), refill=2)  # a later event: marks only
    assert again.applied and again.taken == ()
    assert store.child_checkin(BULK, first.request_id).outstanding  # still the bulk's child
    assert second.request_id in {c.request_id for c in store.stalled_children(BULK, idle_s=0)}
    assert first.request_id not in {c.request_id for c in store.stalled_children(BULK, idle_s=0)}


def test_a_followed_child_is_counted_once_and_the_bulk_ends_only_when_none_is_followed(store: BulkStore) -> None:
    """A bulk is not over while a child is still followed; its final counts once, a repeat nothing."""
    (only,) = running_bulk(store, 1, window=1)
    store.child_following(BULK, only.request_id, (("waiting|DP01", 1),))
    record = store.get(BULK)
    assert record is not None and (record.outstanding, record.following, record.over) == (0, 1, False)
    assert record.distribution == {
        "distributing": 1,
        "distributed": 0,
        "distributed_with_failures": 0,
        "distribution_timed_out": 0,
    }
    update = store.child_finished(BULK, only.request_id, "distributed_with_failures", marks=(("failed|DP02", 1),))
    assert update.applied and update.last and update.record.state == "done"
    assert update.record.distribution == {
        "distributing": 0,
        "distributed": 0,
        "distributed_with_failures": 1,
        "distribution_timed_out": 0,
    }
    assert not store.child_finished(BULK, only.request_id, "distributed_with_failures").applied
    late = store.child_following(BULK, only.request_id, (("waiting|DP09", 1),))
    assert not late.applied  # an event after the final changes nothing
    rollup = store.stragglers(BULK)
    assert rollup is not None and [(d.dp, d.held, d.by_status["failed"]) for d in rollup.dps] == [("DP02", 1, 1)]


def test_the_rollup_holds_each_childs_latest_marks(store: BulkStore) -> None:
    """A child's new marks replace its old ones; a DP no child names any more leaves the rollup."""
    a, b, c = running_bulk(store, 3, window=3)
    store.child_following(BULK, a.request_id, ((HELD_AT_SOURCE, 1),))
    store.child_following(BULK, b.request_id, (("waiting|DP01", 1), ("waiting|DP02", 1)))
    store.child_following(BULK, c.request_id, (("retrying|DP01", 1), (UNLISTED, 3)))
    store.child_following(BULK, a.request_id, (("waiting|DP01", 1),))  # its source rose: now copying
    store.child_following(BULK, b.request_id, (("waiting|DP01", 1),))  # DP02 got it
    rollup = store.stragglers(BULK)
    assert rollup is not None
    assert [(d.dp, d.held, d.by_status) for d in rollup.dps] == [
        ("DP01", 3, {"waiting": 2, "retrying": 1, "failed": 0, "unknown": 0})
    ]
    assert (rollup.dps_total, rollup.held_at_source, rollup.unlisted) == (1, 0, 3)
    store.child_finished(BULK, a.request_id, "distributed")
    store.child_finished(BULK, b.request_id, "distributed")
    store.child_finished(BULK, c.request_id, "distribution_timed_out", marks=(("retrying|DP01", 1),))
    rollup = store.stragglers(BULK)
    assert rollup is not None
    assert [(d.dp, d.held) for d in rollup.dps] == [("DP01", 1)]
    assert (rollup.unlisted, rollup.held_at_source) == (0, 0)


def test_a_stragglers_read_lists_the_worst_dps_and_counts_the_rest(store: BulkStore) -> None:
    """Bounded whatever the number of DPs: the top `max_dps` by packages held, and how many are not listed."""
    taken = running_bulk(store, 40, window=40)
    for number, child in enumerate(taken):
        # DP00 holds all 40 back, DP01 20, DP02 14, ... DPnn 40 // (nn + 1).
        marks = tuple((f"failed|DP{dp:02d}", 1) for dp in range(40) if number % (dp + 1) == 0)
        store.child_following(BULK, child.request_id, marks)
    rollup = store.stragglers(BULK, max_dps=3)
    assert rollup is not None
    assert [(d.dp, d.held) for d in rollup.dps] == [("DP00", 40), ("DP01", 20), ("DP02", 14)]
    assert rollup.dps_total == 40


def test_stragglers_of_an_unknown_bulk_are_none(store: BulkStore) -> None:
    assert store.stragglers(f"bulk-{'9' * 32}") is None
