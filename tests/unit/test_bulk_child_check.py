"""Bulk ids and the bulk-child check: a strict id shape, and only a request its bulk lists is a child.

Pure logic with fakes: the delivery use case and its executor (worker/usecase/delivery.py, worker/usecase/execute.py)
with an in-memory bulk, and the bulk runner's `child_ended` over a store that knows no bulk.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.idempotency import Claim
from config.settings import ProviderSettings, RetryPolicy, RetrySettings, Settings
from producers.bulk import new_bulk_id
from testing.standins import MemoryCoalescer, MemorySlots, MemoryWatch, NoFences
from worker.bulk_job import BulkRunner
from worker.domain.deadline import Deadline
from worker.domain.ids import child_request_id, claimed_bulk, is_bulk_id
from worker.domain.outcomes import Outcome
from worker.domain.packages import PackageInfo
from worker.stores.bulk_store import BulkNotFoundError, BulkStore, Checkin
from worker.usecase.execute import run_delivery
from worker.usecase.ports import Delivery, DeliveryDeps

BULK = f"bulk-{'0123456789abcdef' * 2}"
OTHER_BULK = f"bulk-{'f' * 32}"
HOSTILE_CORRELATION_IDS = ("PS1", "null", "NaN", "bulk-1", BULK, OTHER_BULK, f"{BULK}:PS100001")
NO_RETRIES = RetryPolicy(max_attempts=1, initial_backoff_s=0, max_backoff_s=0)
SETTINGS = Settings(
    providers={"PS1": ProviderSettings(endpoint="https://sccm01:5986/wsman", username="u", password="p")},
    retry=RetrySettings(in_call=NO_RETRIES, transient=NO_RETRIES, medium=NO_RETRIES),
)


class AcceptingProvider:
    """Every package is a plain one, and every RefreshPkgSource is accepted."""

    def __init__(self) -> None:
        self.invokes = 0

    def get_package(self, package_class: str, package_id: str, *, deadline: Deadline | None = None) -> PackageInfo:
        return PackageInfo(class_name=package_class, package_id=package_id, pkg_source_flag=2, source_version=1)

    def refresh(self, package_class: str, package_id: str, *, deadline: Deadline | None = None) -> int:
        self.invokes += 1
        return 0


@dataclass
class Finals:
    """Outcome sink and final lookup in one (a rejection answers one message and reserves nothing)."""

    outcomes: list[Outcome] = field(default_factory=list)

    def publish(self, outcome: Outcome, *, message_key: str | None = None) -> bool:
        self.outcomes.append(outcome)
        return True

    def final_recorded(self, request_id: str) -> bool:
        return self.final_outcome(request_id) is not None

    def final_outcome(self, request_id: str) -> Outcome | None:
        found = (o for o in self.outcomes if o.final and o.status != "rejected" and o.request_id == request_id)
        return next(found, None)


def requeue(kwargs: Mapping[str, Any], countdown_s: float) -> NoReturn:
    raise AssertionError(f"nothing here is re-queued (countdown {countdown_s})")


@dataclass
class MemoryBulks:
    """A bulk's outstanding children as the store lists them; any other bulk is unknown."""

    outstanding: set[str] = field(default_factory=set)
    cancelled: bool = False
    checkins: list[str] = field(default_factory=list)

    def child_checkin(self, bulk_id: str, child_request_id: str) -> Checkin:
        self.checkins.append(child_request_id)
        if bulk_id != BULK:
            raise BulkNotFoundError(bulk_id)
        return Checkin(outstanding=child_request_id in self.outstanding, cancelled=self.cancelled)


class UnknownBulkStore:
    """What `child_ended` needs of the store, for bulks that do not exist (never was, or expired)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def child_finished(self, bulk_id: str, request_id: str, status: str, **_: Any) -> Any:
        self.asked.append(request_id)
        raise BulkNotFoundError(bulk_id)


@dataclass
class World:
    """The delivery use case with an in-memory bulk, and the real bulk runner told of each final."""

    provider: AcceptingProvider = field(default_factory=AcceptingProvider)
    finals_store: Finals = field(default_factory=Finals)
    bulks: MemoryBulks = field(default_factory=MemoryBulks)
    store: UnknownBulkStore = field(default_factory=UnknownBulkStore)
    told: list[Outcome] = field(default_factory=list)
    on_final: Callable[[Outcome], None] | None = None

    def tell(self, outcome: Outcome) -> None:
        self.told.append(outcome)
        runner = BulkRunner(
            settings=SETTINGS,
            store=cast(BulkStore, self.store),
            outcomes=cast(Any, None),
            dispatch=lambda _batch: None,
            worker="test-host:1",
        )
        runner.child_ended(outcome)

    def deliver(self, kwargs: Mapping[str, Any], *, task_id: str = "task-1") -> dict[str, Any]:
        deps = DeliveryDeps(
            settings=SETTINGS,
            provider=lambda _site: self.provider,
            finals=self.finals_store,
            fences=NoFences(),
            worker="test-host:1",
            coalescer=MemoryCoalescer(time.time),
            slots=MemorySlots(time.time, lease_s=SETTINGS.limits.slot_lease_s, waiter_ttl_s=120.0),
            bulks=self.bulks,
            watch=MemoryWatch(time.time),
            on_final=self.on_final or self.tell,
        )
        return run_delivery(Delivery((), kwargs, task_id), deps, self.finals_store, requeue)

    def finals(self) -> list[Outcome]:
        return [o for o in self.finals_store.outcomes if o.final]


def kwargs(**overrides: Any) -> dict[str, Any]:
    return {"site_code": "PS1", "package_id": "PS100001", "package_class": "SMS_Package", **overrides}


# -- the id shape ------------------------------------------------------------------------------


def test_minted_and_idempotency_derived_bulk_ids_have_the_strict_shape() -> None:
    """new_bulk_id and the API's key-derived ids are "bulk-" and 32 lowercase hex digits."""
    claim = Claim(redis_key="k", scope_digest=uuid.uuid4().hex, marker="m")
    for bulk_id in (new_bulk_id(), new_bulk_id(), claim.derived_id("bulk", 0)):
        assert is_bulk_id(bulk_id) and len(bulk_id) == 37
    assert new_bulk_id() != new_bulk_id()


@pytest.mark.parametrize(
    "value",
    [
        "PS1",
        "null",
        "NaN",
        "bulk-1",
        "bulk-0123456789abcdef",  # 16 digits
        "BULK-" + "a" * 32,
        "bulk-" + "A" * 32,
        "bulk-" + "g" * 32,
        "bulk-" + "a" * 33,
        "bulk-" + "a" * 32 + "\n",
        " bulk-" + "a" * 32,
        "bulk-" + "a" * 31 + ":",
        "",
        None,
        42,
        ["bulk-" + "a" * 32],
    ],
)
def test_anything_but_the_strict_shape_is_not_a_bulk_id(value: object) -> None:
    """Site codes, JSON-ish words, other lengths, upper case, whitespace and non-strings are refused."""
    assert not is_bulk_id(value)


def test_claimed_bulk_reads_only_the_canonical_child_id() -> None:
    """`<bulk id>:<PACKAGEID>` as child_request_id writes it names the bulk; every other spelling does not."""
    assert claimed_bulk(child_request_id(BULK, "ps10000a")) == BULK
    for request_id in (
        f"{BULK}:ps10000a",  # not how a child's id is written
        f"{BULK}:unknown",
        f"{BULK}:PS10000A:x",
        f"{BULK}:",
        BULK,
        "bulk-1:PS10000A",
        f"PS1:{BULK}",
        "PS1",
        None,
        12,
    ):
        assert claimed_bulk(request_id) is None, request_id


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=80), st.builds(lambda tail: f"{BULK}:{tail}", st.text(max_size=12))))
def test_claimed_bulk_never_raises_and_only_names_a_prefix_bulk(request_id: str) -> None:
    """Any string: None, or a strict bulk id that the request id starts with."""
    bulk_id = claimed_bulk(request_id)
    assert bulk_id is None or (is_bulk_id(bulk_id) and request_id.startswith(f"{bulk_id}:"))


# -- one final, whatever the correlation id ----------------------------------------------------


def test_a_rejected_message_with_a_bulk_shaped_correlation_id_gets_exactly_one_final() -> None:
    """The issue's case: an invalid PackageID and a bulk id as correlation id end `rejected`, once."""
    world = World()
    result = world.deliver(kwargs(package_id="not-an-id", correlation_id=BULK, request_id="req-hostile-1"))
    (final,) = world.finals()
    assert final.status == "rejected" and result["status"] == "rejected"
    assert world.told == [final] and world.store.asked == []


@pytest.mark.parametrize("correlation_id", HOSTILE_CORRELATION_IDS)
def test_a_valid_request_naming_a_bulk_as_correlation_id_is_an_ordinary_request(correlation_id: str) -> None:
    """Refreshed once, its correlation id kept as sent, no bulk consulted, even if the bulk is cancelled."""
    world = World(bulks=MemoryBulks(cancelled=True))
    world.deliver(kwargs(correlation_id=correlation_id, request_id="req-ordinary-1"))
    (final,) = world.finals()
    assert final.status == "accepted" and final.correlation_id == correlation_id
    assert world.provider.invokes == 1 and world.bulks.checkins == [] and world.store.asked == []


def test_a_request_shaped_like_a_child_the_bulk_does_not_list_is_an_ordinary_request() -> None:
    """`<bulk>:<PackageID>` of a cancelled bulk that does not list it: refreshed, not cancelled."""
    child_id = child_request_id(BULK, "PS100001")
    world = World(bulks=MemoryBulks(cancelled=True))
    world.deliver(kwargs(correlation_id=BULK, request_id=child_id))
    (final,) = world.finals()
    assert final.status == "accepted" and world.bulks.checkins == [child_id]


def test_a_child_of_an_unknown_bulk_is_an_ordinary_request() -> None:
    """The store knows no such bulk (never was, or expired): no internal error, one final."""
    world = World()
    world.deliver(kwargs(correlation_id=OTHER_BULK, request_id=child_request_id(OTHER_BULK, "PS100001")))
    (final,) = world.finals()
    assert final.status == "accepted"


def test_a_listed_child_of_a_cancelled_bulk_ends_cancelled_without_a_provider_call() -> None:
    """The child check still finds real children: listed, never attempted, bulk cancelled."""
    child_id = child_request_id(BULK, "PS100001")
    world = World(bulks=MemoryBulks(outstanding={child_id}, cancelled=True))
    world.deliver(kwargs(correlation_id=BULK, request_id=child_id))
    (final,) = world.finals()
    assert final.status == "cancelled" and world.provider.invokes == 0


def test_a_redelivered_child_whose_final_is_recorded_is_told_to_its_bulk_again() -> None:
    """Dropped, nothing published again, but `on_final` hears the recorded final (a count lost in a crash)."""
    child_id = child_request_id(BULK, "PS100001")
    world = World(bulks=MemoryBulks(outstanding={child_id}))
    world.deliver(kwargs(correlation_id=BULK, request_id=child_id))
    (final,) = world.finals()
    result = world.deliver(kwargs(correlation_id=BULK, request_id=child_id))
    assert result == {"request_id": child_id, "already_final": True}
    assert world.finals() == [final] and world.told == [final, final]


@settings(max_examples=150, deadline=None)
@given(
    correlation_id=st.one_of(st.text(max_size=60), st.sampled_from(HOSTILE_CORRELATION_IDS)),
    request_id=st.one_of(
        st.none(), st.text(max_size=60), st.sampled_from([child_request_id(BULK, "PS100001"), f"{BULK}:x"])
    ),
    package_id=st.sampled_from(["PS100001", "ps100001", "bad", ""]),
)
def test_any_correlation_and_request_id_end_with_exactly_one_final(
    correlation_id: str, request_id: str | None, package_id: str
) -> None:
    """Whatever the ids and however the message ends (accepted, rejected), one final and no exception."""
    world = World()
    fields = kwargs(package_id=package_id, correlation_id=correlation_id)
    if request_id is not None:
        fields["request_id"] = request_id
    world.deliver(fields, task_id=f"task-{uuid.uuid4().hex}")
    (final,) = world.finals()
    assert final.status in ("accepted", "rejected")


# -- bookkeeping after a final never makes a second one --------------------------------------


def test_a_bug_after_the_final_is_logged_without_the_message_and_causes_no_second_final(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """on_final raising: the final stands alone, the log names the request and the type, not the kwargs."""
    secret = "Sommer2024-Geheim"

    def broken(_outcome: Outcome) -> None:
        raise ValueError(secret)

    world = World(on_final=broken)
    with caplog.at_level(logging.ERROR, logger="worker.usecase.execute"):
        world.deliver(kwargs(site_code=secret, request_id="req-bug-1"))
    (final,) = world.finals()
    assert final.status == "rejected"
    assert "req-bug-1" in caplog.text and "ValueError" in caplog.text and secret not in caplog.text
