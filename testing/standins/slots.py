"""The per-provider concurrency cap in memory: worker/stores/slots.py's ProviderSlots without Redis.

The same rules as slots.lua: at most `limit` leases per site, each expiring `lease_s` after it was
granted or renewed; a caller that finds no free slot joins the site's line, ordered by priority
then arrival, and keeps its place for `waiter_ttl_s` after each poll; a slot goes to the best
waiters only. Expired leases and silent waiters leave on the next acquire, as in the script, so a
release or renew in between still finds them. Hold and release-gap averages feed `retry_after_s`
through the store's own estimate.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from worker.domain.packages import validate_site_code
from worker.stores.slots import estimate_retry_after_s
from worker.usecase.values import AcquireResult, Granted, Lease, Wait

__all__ = ["MemorySlots"]


@dataclass
class _Waiter:
    place: tuple[int, int]  # (priority, arrival): lower goes first
    deadline_s: float


@dataclass
class _Site:
    holders: dict[str, Lease] = field(default_factory=dict)
    waiters: dict[str, _Waiter] = field(default_factory=dict)
    arrivals: int = 0
    ewma_hold_s: float | None = None
    ewma_gap_s: float | None = None
    last_release_at: float | None = None

    def reclaim(self, now: float) -> None:
        """Dead holders (their lease ran out) and dead waiters (they stopped polling) leave."""
        self.holders = {h: lease for h, lease in self.holders.items() if lease.expires_at_s > now}
        self.waiters = {h: waiter for h, waiter in self.waiters.items() if waiter.deadline_s > now}

    def rank(self, holder_id: str) -> int:
        line = sorted(self.waiters, key=lambda h: self.waiters[h].place)
        return line.index(holder_id)


class MemorySlots:
    """Every site's slots in dicts; `now` is the clock used when a call passes no `now_s`."""

    def __init__(
        self,
        now: Callable[[], float],
        *,
        lease_s: float,
        waiter_ttl_s: float,
        min_retry_after_s: float = 2.0,
        max_retry_after_s: float = 60.0,
        default_hold_s: float = 30.0,
        ewma_alpha: float = 0.2,
    ) -> None:
        self._now = now
        self._lease_s = float(lease_s)
        self._waiter_ttl_s = float(waiter_ttl_s)
        self._min_retry_after_s = float(min_retry_after_s)
        self._max_retry_after_s = float(max_retry_after_s)
        self._default_hold_s = float(default_hold_s)
        self._alpha = float(ewma_alpha)
        self._sites: dict[str, _Site] = {}

    @property
    def lease_s(self) -> float:
        return self._lease_s

    def try_acquire(
        self,
        site_code: str,
        holder_id: str,
        limit: int,
        *,
        priority: int,
        lane: str | None = None,
        now_s: float | None = None,
    ) -> AcquireResult:
        """A slot for `holder_id` (of the site or one of its lanes: a cap of its own), or its place in line.

        Asking again renews a lease or keeps a place.
        """
        now = self._now() if now_s is None else now_s
        site_code = validate_site_code(site_code)
        site = self._sites.setdefault(_pool(site_code, lane), _Site())
        site.reclaim(now)
        held = site.holders.get(holder_id)
        if held is not None:
            site.holders[holder_id] = held = replace(held, expires_at_s=now + self._lease_s)
            site.waiters.pop(holder_id, None)
            return Granted(held)
        in_use = len(site.holders)
        waiter = site.waiters.get(holder_id)
        if waiter is None:
            site.arrivals += 1
            waiter = site.waiters[holder_id] = _Waiter((priority, site.arrivals), 0.0)
        waiter.deadline_s = now + self._waiter_ttl_s
        rank = site.rank(holder_id)
        if rank < limit - in_use:
            del site.waiters[holder_id]
            lease = Lease(site_code, holder_id, uuid.uuid4().hex, now, now + self._lease_s, lane)
            site.holders[holder_id] = lease
            return Granted(lease)
        retry_after_s = estimate_retry_after_s(
            rank=rank,
            in_use=in_use,
            limit=limit,
            hold_s=self._default_hold_s if site.ewma_hold_s is None else site.ewma_hold_s,
            release_gap_s=site.ewma_gap_s,
            min_s=self._min_retry_after_s,
            max_s=self._max_retry_after_s,
        )
        return Wait(rank=rank, in_use=in_use, waiting=len(site.waiters), retry_after_s=retry_after_s)

    def release(self, lease: Lease, *, now_s: float | None = None) -> bool:
        """Give the slot back; False if it was already released or reclaimed."""
        now = self._now() if now_s is None else now_s
        site = self._sites.get(_pool(lease.site_code, lease.lane))
        held = None if site is None else site.holders.get(lease.holder_id)
        if site is None or held is None or held.token != lease.token:
            return False
        del site.holders[lease.holder_id]
        site.ewma_hold_s = self._average(site.ewma_hold_s, max(0.0, now - held.acquired_at_s))
        if site.last_release_at is not None and site.waiters:
            gap_s = min(max(0.0, now - site.last_release_at), self._max_retry_after_s)
            site.ewma_gap_s = self._average(site.ewma_gap_s, gap_s)
        site.last_release_at = now
        return True

    def renew(self, lease: Lease, *, now_s: float | None = None) -> Lease | None:
        """The lease extended by `lease_s` from now, or None if it was lost (reclaimed or released)."""
        now = self._now() if now_s is None else now_s
        site = self._sites.get(_pool(lease.site_code, lease.lane))
        held = None if site is None else site.holders.get(lease.holder_id)
        if site is None or held is None or held.token != lease.token:
            return None
        site.holders[lease.holder_id] = replace(held, expires_at_s=now + self._lease_s)
        return replace(lease, expires_at_s=now + self._lease_s)

    def abandon(self, site_code: str, holder_id: str) -> bool:
        """Leave the waiting line now; False if it was not waiting."""
        site = self._sites.get(_pool(validate_site_code(site_code), None))
        return site is not None and site.waiters.pop(holder_id, None) is not None

    def _average(self, previous: float | None, sample: float) -> float:
        return sample if previous is None else self._alpha * sample + (1 - self._alpha) * previous


def _pool(site_code: str, lane: str | None) -> str:
    """The slot pool of a site, or of one of its lanes (the Redis store keeps them under separate keys)."""
    return site_code if lane is None else f"{site_code}.{lane}"
