"""The bulk children's contract: BulkStore on a real Redis and its stand-in answer alike.

Every scenario runs against both (worker/stores/bulk_store.py, testing/standins/bulk_children.py),
from the children's side: check-ins, finals counted once, cancels, stalled children. The Redis
store is driven through the stand-in's setup (`add_bulk`: created, enumerated, every child taken).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import pytest
import redis

from testing.standins import MemoryBulkChildren
from worker.domain.ids import child_request_id
from worker.stores.bulk_store import BulkNotFoundError, BulkStore, ChildSpec
from worker.stores.keys import RedisKeys
from worker.usecase.values import Checkin

pytestmark = pytest.mark.integration

T0 = 1_000_000.0
BULK = "bulk-" + "1" * 32  # the strict shape: "bulk-" and 32 lowercase hex digits
NEVER = "bulk-" + "0" * 32  # a bulk with no record
FIRST, SECOND = child_request_id(BULK, "PS100001"), child_request_id(BULK, "PS100002")


class BulkChildrenUnderTest(Protocol):
    def add_bulk(self, bulk_id: str, child_request_ids: Iterable[str], *, now_s: float | None = None) -> None: ...

    def cancel(self, bulk_id: str) -> bool: ...

    def child_checkin(self, bulk_id: str, child_request_id: str, *, now_s: float | None = None) -> Checkin: ...

    def child_finished(self, bulk_id: str, child_request_id: str, status: str) -> bool: ...

    def counts(self, bulk_id: str) -> dict[str, int]: ...

    def stalled_children(
        self,
        bulk_id: str,
        *,
        idle_s: float,
        undelivered_s: float | None = None,
        max_count: int = 100,
        now_s: float | None = None,
    ) -> list[str]: ...


class RedisBulkChildren:
    """The Redis store set up and read the way the stand-in is."""

    def __init__(self, store: BulkStore) -> None:
        self._store = store

    def add_bulk(self, bulk_id: str, child_request_ids: Iterable[str], *, now_s: float | None = None) -> None:
        children = [ChildSpec(request_id, {}) for request_id in child_request_ids]
        self._store.create(bulk_id, "PS1", {}, now_s=now_s)
        self._store.append_pending(bulk_id, children)
        self._store.enumeration_done(bulk_id, now_s=now_s)
        assert len(self._store.take(bulk_id, max(1, len(children)), now_s=now_s)) == len(children)

    def cancel(self, bulk_id: str) -> bool:
        return self._store.cancel(bulk_id).applied

    def child_checkin(self, bulk_id: str, child_request_id: str, *, now_s: float | None = None) -> Checkin:
        return self._store.child_checkin(bulk_id, child_request_id, now_s=now_s)

    def child_finished(self, bulk_id: str, child_request_id: str, status: str) -> bool:
        return self._store.child_finished(bulk_id, child_request_id, status).applied

    def counts(self, bulk_id: str) -> dict[str, int]:
        record = self._store.get(bulk_id)
        if record is None:
            raise BulkNotFoundError(bulk_id)
        return record.counts

    def stalled_children(
        self,
        bulk_id: str,
        *,
        idle_s: float,
        undelivered_s: float | None = None,
        max_count: int = 100,
        now_s: float | None = None,
    ) -> list[str]:
        stalled = self._store.stalled_children(
            bulk_id, idle_s=idle_s, undelivered_s=undelivered_s, max_count=max_count, now_s=now_s
        )
        return [child.request_id for child in stalled]


@pytest.fixture(params=["redis", "memory"])
def bulks(request: pytest.FixtureRequest) -> BulkChildrenUnderTest:
    if request.param == "memory":
        return MemoryBulkChildren(lambda: T0)
    client: redis.Redis = request.getfixturevalue("redis_client")
    keys: RedisKeys = request.getfixturevalue("redis_keys")
    return RedisBulkChildren(BulkStore(client, keys))


def test_an_outstanding_childs_checkin_finds_its_bulk_live(bulks: BulkChildrenUnderTest) -> None:
    """A child that was sent is outstanding, and its bulk is not cancelled."""
    bulks.add_bulk(BULK, [FIRST, SECOND], now_s=T0)
    assert bulks.child_checkin(BULK, FIRST, now_s=T0 + 1) == Checkin(outstanding=True, cancelled=False)


def test_a_cancel_reaches_a_child_at_its_next_checkin(bulks: BulkChildrenUnderTest) -> None:
    """Cancelling a running bulk applies once; its children then learn of it."""
    bulks.add_bulk(BULK, [FIRST], now_s=T0)
    assert bulks.cancel(BULK) and not bulks.cancel(BULK)
    assert bulks.child_checkin(BULK, FIRST, now_s=T0 + 1) == Checkin(outstanding=True, cancelled=True)


def test_a_childs_final_is_counted_once(bulks: BulkChildrenUnderTest) -> None:
    """A repeated final counts nothing; the counted child is no longer outstanding."""
    bulks.add_bulk(BULK, [FIRST, SECOND], now_s=T0)
    assert bulks.child_finished(BULK, FIRST, "accepted")
    assert not bulks.child_finished(BULK, FIRST, "accepted")
    assert bulks.counts(BULK) == {"accepted": 1}
    assert bulks.child_checkin(BULK, FIRST, now_s=T0 + 1) == Checkin(outstanding=False, cancelled=False)


def test_the_children_of_a_cancelled_bulk_are_counted_like_any(bulks: BulkChildrenUnderTest) -> None:
    """Finals after a cancel still count, whatever their status."""
    bulks.add_bulk(BULK, [FIRST, SECOND], now_s=T0)
    bulks.cancel(BULK)
    assert bulks.child_finished(BULK, FIRST, "cancelled") and bulks.child_finished(BULK, SECOND, "accepted")
    assert bulks.counts(BULK) == {"cancelled": 1, "accepted": 1}


def test_a_bulk_whose_last_child_ended_can_no_longer_be_cancelled(bulks: BulkChildrenUnderTest) -> None:
    """The last final ends the bulk done: a cancel after it applies nothing."""
    bulks.add_bulk(BULK, [FIRST], now_s=T0)
    assert bulks.child_finished(BULK, FIRST, "accepted")
    assert not bulks.cancel(BULK)


def test_a_request_the_bulk_did_not_send_is_not_outstanding(bulks: BulkChildrenUnderTest) -> None:
    """A check-in under an id the bulk never took says so, and counts nothing when it ends."""
    bulks.add_bulk(BULK, [FIRST], now_s=T0)
    stranger = child_request_id(BULK, "PS1FFFFF")
    assert bulks.child_checkin(BULK, stranger, now_s=T0 + 1) == Checkin(outstanding=False, cancelled=False)
    assert not bulks.child_finished(BULK, stranger, "accepted")
    assert bulks.counts(BULK) == {}


def test_an_unknown_bulk_is_not_found(bulks: BulkChildrenUnderTest) -> None:
    """A check-in for a bulk with no record raises BulkNotFoundError."""
    with pytest.raises(BulkNotFoundError):
        bulks.child_checkin(NEVER, child_request_id(NEVER, "PS100001"), now_s=T0)


def test_a_checkin_keeps_a_child_from_being_stalled(bulks: BulkChildrenUnderTest) -> None:
    """Only the silent child is stalled, once: it is stamped, so the next sweep leaves it alone."""
    bulks.add_bulk(BULK, [FIRST, SECOND], now_s=T0)
    bulks.child_checkin(BULK, FIRST, now_s=T0 + 50)
    assert bulks.stalled_children(BULK, idle_s=30, now_s=T0 + 60) == [SECOND]
    assert bulks.stalled_children(BULK, idle_s=30, now_s=T0 + 60) == []
    assert bulks.stalled_children(BULK, idle_s=30, now_s=T0 + 90) == [FIRST, SECOND]


def test_a_child_taken_but_never_delivered_is_sent_again_soon(bulks: BulkChildrenUnderTest) -> None:
    """Its dispatcher died before publishing it: found after `undelivered_s`, long before `idle_s`."""
    bulks.add_bulk(BULK, [FIRST, SECOND], now_s=T0)
    bulks.child_checkin(BULK, FIRST, now_s=T0 + 5)
    assert bulks.stalled_children(BULK, idle_s=3600, undelivered_s=20, now_s=T0 + 19) == []
    assert bulks.stalled_children(BULK, idle_s=3600, undelivered_s=20, now_s=T0 + 21) == [SECOND]
    assert bulks.stalled_children(BULK, idle_s=3600, undelivered_s=20, now_s=T0 + 30) == []
    assert bulks.stalled_children(BULK, idle_s=3600, undelivered_s=20, now_s=T0 + 42) == [SECOND]
    bulks.child_checkin(BULK, SECOND, now_s=T0 + 43)
    assert bulks.stalled_children(BULK, idle_s=3600, undelivered_s=20, now_s=T0 + 100) == []
