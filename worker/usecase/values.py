"""The value types the refresh use case shares with the stores that implement its ports.

Plain data and one rule (`landed`), no I/O: the stores (worker/stores/) import these to answer
the ports of worker/usecase/ports.py, so the use case never imports a store.

    slots       Lease, Granted, Wait, PRIORITY_*      (worker/stores/slots.py)
    coalescing  Leader, Joined, Follower, Closed      (worker/stores/coalesce.py)
    bulk        Checkin, BulkNotFoundError            (worker/stores/bulk_store.py)
    fence       FenceSnapshot, landed                 (worker/stores/fence.py)
    monitors    JOINED, WAITING_FOR_*, FOLLOWING_TO_DPS: the custom task state names a re-queue reports
                (worker/task_states.py sends them as Celery task events)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Final

from worker.domain.packages import PackageInfo

__all__ = [
    "FOLLOWING_TO_DPS",
    "JOINED",
    "PRIORITY_BULK",
    "PRIORITY_FOLLOW_UP",
    "PRIORITY_SINGLE",
    "WAITING_FOR_MEDIUM",
    "WAITING_FOR_SLOT",
    "AcquireResult",
    "BulkNotFoundError",
    "Checkin",
    "ClaimResult",
    "Closed",
    "FenceSnapshot",
    "Follower",
    "Granted",
    "Joined",
    "Leader",
    "Lease",
    "Parked",
    "SweepResult",
    "Wait",
    "landed",
    "woken_ahead",
]


# -- provider slots -------------------------------------------------------------------------------

# Lower goes first: a verifying request's short Get (its refresh already accepted), then single
# requests, then bulk children and patient re-tries.
PRIORITY_FOLLOW_UP: Final = 0
PRIORITY_SINGLE: Final = 1
PRIORITY_BULK: Final = 2
# A request re-trying a STORAGE_COMPRESS medium that was not ready waits minutes to hours by design:
# each re-try yields, as bulk children do, to requests not tried yet, so a crowd of media waits
# never keeps fresh requests (and the first tries that start other media waits) from the provider.
PRIORITY_PATIENT: Final = PRIORITY_BULK


@dataclass(frozen=True)
class Lease:
    """A held slot. `token` tells this grant from a later one to the same holder id."""

    site_code: str
    holder_id: str
    token: str
    acquired_at_s: float
    expires_at_s: float
    # The lane within the site (a class refreshed one at a time), or None for the site's own cap.
    lane: str | None = None


@dataclass(frozen=True)
class Granted:
    lease: Lease


def woken_ahead(limit: int) -> int:
    """How many parked waiters a site wakes ahead of their slot: half its limit, rounded up
    (worker/stores/slots.lua `wake_ahead` counts the same way)."""
    return -(-limit // 2)


@dataclass(frozen=True)
class Wait:
    """No slot for this caller yet: `rank` waiters are ahead of it (0 = next in line)."""

    rank: int
    in_use: int
    waiting: int
    retry_after_s: float


AcquireResult = Granted | Wait


@dataclass(frozen=True)
class Parked:
    """In the site's line with its wake record; `woken`: a slot was free, its message is on its way back."""

    woken: bool
    rank: int
    in_use: int
    waiting: int


@dataclass(frozen=True)
class SweepResult:
    """A site after a sweep: live leases, the line, and parked requests (woken ones included)."""

    in_use: int
    waiting: int
    parked: int


# -- coalescing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leader:
    """This request leads: it refreshes, and publishes its followers' finals when it closes."""

    request_id: str


@dataclass(frozen=True)
class Joined:
    """A refresh of the package is already pending: this request's final comes from that leader."""

    leader_request_id: str


ClaimResult = Leader | Joined


@dataclass(frozen=True)
class Follower:
    """A request that joined a leader, with the info it gave for publishing its final outcome."""

    request_id: str
    info: dict[str, Any]


@dataclass(frozen=True)
class Closed:
    """`closed`: this call ended the leader's group; `followers`: still to publish for that leader."""

    closed: bool
    followers: tuple[Follower, ...]


# -- bulk children --------------------------------------------------------------------------------


class BulkNotFoundError(LookupError):
    """No record for this bulk id (never created, or expired)."""


@dataclass(frozen=True)
class Checkin:
    """A child's sign of life: is it outstanding (its heartbeat refreshed), is its bulk cancelled."""

    outstanding: bool
    cancelled: bool


# -- the invoke fence -----------------------------------------------------------------------------

_NO_ACTION = 0


@dataclass(frozen=True)
class FenceSnapshot:
    """The package as it was just before RefreshPkgSource was invoked (worker/stores/fence.py)."""

    source_version: int | None
    last_refresh_time: str | None
    action_in_progress: int | None
    written_at: float

    @classmethod
    def of(cls, package: PackageInfo, now: float) -> FenceSnapshot:
        return cls(package.source_version, package.last_refresh_time, package.action_in_progress, now)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> FenceSnapshot | None:
        """The snapshot, or None for anything we did not write (a fence is a hint, never trusted blindly)."""
        try:
            data: Any = json.loads(text)
            snapshot = cls(
                source_version=_int_or_none(data["source_version"]),
                last_refresh_time=_str_or_none(data["last_refresh_time"]),
                action_in_progress=_int_or_none(data["action_in_progress"]),
                written_at=float(data["written_at"]),
            )
        except (ValueError, TypeError, KeyError):
            return None
        return snapshot if math.isfinite(snapshot.written_at) else None


def landed(before: FenceSnapshot, now: PackageInfo) -> bool:
    """True when the package moved since `before`: the invoke that followed it was accepted.

    Only when the package had no action pending at fence time (ActionInProgress 0), moved means:
    SourceVersion rose (DistMgr processed the refresh), or LastRefreshTime changed (the provider
    records the call), or ActionInProgress went from none to an action (the provider queued the
    update for DistMgr). A refresh by another request in between also counts: the content was
    refreshed after this request was made, which is what it asked for.

    With an action already pending at fence time (an older refresh DistMgr is still on), nothing
    proves this request's Invoke landed: the older pass can finish and bump SourceVersion from a
    snapshot taken before this request's changes. The request invokes again; one more
    differential update costs far less than stale content on every distribution point.
    """
    if before.action_in_progress != _NO_ACTION:
        return False  # a refresh was already pending: a later move may be that one's
    versions = (before.source_version, now.source_version)
    if versions[0] is not None and versions[1] is not None and versions[1] > versions[0]:
        return True
    if before.last_refresh_time and now.last_refresh_time and now.last_refresh_time != before.last_refresh_time:
        return True
    return now.action_in_progress not in (None, _NO_ACTION)


def _int_or_none(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("not an integer")
    return value


def _str_or_none(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


# -- what monitors are told a re-queued request waits for -----------------------------------------

# Custom task state names (worker/task_states.py turns each into a Celery task event).
WAITING_FOR_MEDIUM: Final = "WAITING_FOR_MEDIUM"
WAITING_FOR_SLOT: Final = "WAITING_FOR_SLOT"
JOINED: Final = "JOINED"
FOLLOWING_TO_DPS: Final = "FOLLOWING_TO_DPS"
