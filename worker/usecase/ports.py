"""What the refresh use case (worker/usecase/delivery.py) is handed: the delivery and its collaborators.

The collaborators are protocols, so the use case stays free of Redis and Celery: worker/runtime.py
builds the real ones once per worker process, unit tests pass in-memory ones (testing/standins/).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from config.settings import Settings
from worker.domain.outcomes import Outcome
from worker.usecase.attempt import RefreshClient
from worker.usecase.follow import DistributionReader
from worker.usecase.redistribute import RedistributionMarks
from worker.usecase.values import Checkin, Closed, FenceSnapshot, Follower, Granted, Joined, Leader, Lease, Wait

__all__ = [
    "BulkChildren",
    "Clock",
    "Coalescing",
    "Delivery",
    "DeliveryDeps",
    "Fences",
    "FinalLookup",
    "Slots",
    "SystemClock",
    "Watching",
]


# -- what comes in ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One message as the broker handed it over: untrusted until `admit` has validated it."""

    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    task_id: str | None


class FinalLookup(Protocol):
    def final_recorded(self, request_id: str) -> bool: ...

    def final_outcome(self, request_id: str) -> Outcome | None: ...


class Coalescing(Protocol):
    """worker.stores.coalesce.Coalescer: one pending refresh per package."""

    def claim(
        self, site_code: str, package_id: str, request_id: str, info: Mapping[str, Any], *, ttl_s: float
    ) -> Leader | Joined: ...

    def close(self, site_code: str, package_id: str, leader_id: str) -> Closed: ...

    def pending_followers(self, leader_id: str) -> tuple[Follower, ...]: ...

    def current_leader(self, site_code: str, package_id: str) -> str | None: ...

    def ack_follower(self, leader_id: str, follower_request_id: str) -> bool: ...


class Slots(Protocol):
    """worker.stores.slots.ProviderSlots: the per-provider concurrency cap."""

    def try_acquire(
        self, site_code: str, holder_id: str, limit: int, *, priority: int, lane: str | None = None, join: bool = True
    ) -> Granted | Wait: ...

    def release(self, lease: Lease) -> bool: ...

    def abandon(self, site_code: str, holder_id: str) -> bool: ...

    def leave(self, site_code: str, holder_id: str) -> bool: ...

    def await_slot(
        self, site_code: str, holder_id: str, limit: int, *, priority: int, timeout_s: float
    ) -> Granted | None: ...

    def await_woken_slot(
        self, site_code: str, holder_id: str, limit: int, *, priority: int, timeout_s: float
    ) -> Granted | None: ...


class Watching(Protocol):
    """worker.stores.request_watch.RequestWatch: when each live request is next due."""

    def expect(self, request_id: str, task_id: str, kwargs: Mapping[str, Any], *, within_s: float) -> None: ...

    def forget(self, request_id: str) -> None: ...


class BulkChildren(Protocol):
    """worker.stores.bulk_store.BulkStore, as a child sees its bulk."""

    def child_checkin(self, bulk_id: str, child_request_id: str) -> Checkin:
        """A sign of life (the child's heartbeat) that also says whether its bulk was cancelled.

        Raises BulkNotFoundError (worker/usecase/values.py) when the bulk has no record.
        """
        ...


class Fences(Protocol):
    def read(self, request_id: str) -> FenceSnapshot | None: ...

    def write(self, request_id: str, snapshot: FenceSnapshot) -> None: ...

    def try_lock(self, request_id: str, *, ttl_s: int) -> str | None: ...

    def lock_left_s(self, request_id: str) -> float: ...

    def unlock(self, request_id: str, token: str) -> None: ...


class Clock(Protocol):
    def time(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass(frozen=True)
class DeliveryDeps:
    """The collaborators of the use case, built once per worker process (worker/runtime.py)."""

    settings: Settings
    provider: Callable[[str], RefreshClient]
    finals: FinalLookup
    fences: Fences
    worker: str
    coalescer: Coalescing
    slots: Slots
    bulks: BulkChildren
    # Records when each live request is next due, so a lost message is sent again.
    watch: Watching
    # Told of every final outcome once it is recorded (a bulk counts its children there).
    on_final: Callable[[Outcome], None]
    # Told of every non-final event once it is recorded (a bulk follows its children there); best
    # effort: a failure is logged, and the child's next event or final tells the bulk again.
    on_event: Callable[[Outcome], None] | None = None
    # A site's reader of DP status for requests followed to every DP (until=distributed); None:
    # the provider client itself. The per-site batcher's seam (worker/usecase/follow.py).
    distribution: Callable[[str], DistributionReader] | None = None
    # The site-wide markers of opt-in redistribution (one RefreshNow per package and DP per window);
    # None: followed requests never redistribute.
    redistributions: RedistributionMarks | None = None
    clock: Clock = field(default_factory=SystemClock)
    sleep: Callable[[float], None] = time.sleep
    # Exceptions that interrupt an attempt from outside (Celery's soft time limit): the attempt
    # counts as timed out, like a provider that never answered.
    interruptions: tuple[type[BaseException], ...] = ()
    # Exceptions a store raises when it cannot be reached (RedisError in the worker): the delivery
    # is re-queued as it arrived, never acked without its final outcome (worker/usecase/execute.py).
    unavailable: tuple[type[BaseException], ...] = ()
