"""The per-provider concurrency cap in memory: worker/stores/slots.py's ProviderSlots without Redis.

The same rules as slots.lua: at most `limit` leases per site, each expiring `lease_s` after it was
granted or renewed; a caller that finds no free slot joins the site's line, ordered by priority
then arrival, either polling (it keeps its place for `waiter_ttl_s` after each poll) or parked
with a wake record; a slot goes to the best waiters only, and every slot freed goes at once to a
parked head of the line, whose wake record is handed to `woken` (a list the test reads: the
message the Redis store would push back). A woken holder whose lease lapses unclaimed is woken
again. Expired leases and silent waiters leave on the next operation, as in the script. Hold and
release-gap averages feed `retry_after_s` through the store's own estimate.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from worker.domain.packages import validate_site_code
from worker.stores.slots import estimate_retry_after_s
from worker.usecase.values import AcquireResult, Granted, Lease, Parked, SweepResult, Wait, woken_ahead

__all__ = ["MemorySlots"]


@dataclass
class _Waiter:
    place: tuple[int, int]  # (priority, arrival): lower goes first
    deadline_s: float  # polling waiters only: a parked one waits without a deadline


@dataclass
class _Site:
    name: str
    lane: str | None
    holders: dict[str, Lease] = field(default_factory=dict)
    waiters: dict[str, _Waiter] = field(default_factory=dict)
    parked: dict[str, str] = field(default_factory=dict)  # holder -> wake record
    # holder -> when its record was sent ahead of its slot; -1: it parked again, not woken ahead again
    prewoken: dict[str, float] = field(default_factory=dict)
    limit: int = 0
    arrivals: int = 0
    ewma_hold_s: float | None = None
    ewma_gap_s: float | None = None
    last_release_at: float | None = None

    def reclaim(self, now: float, lease_s: float, woken: list[str]) -> None:
        """Dead holders leave (a woken one that never claimed is woken again); silent pollers drop out."""
        for holder, lease in list(self.holders.items()):
            if lease.expires_at_s > now:
                continue
            self.prewoken.pop(holder, None)
            if holder in self.parked:
                self.holders[holder] = Lease(self.name, holder, uuid.uuid4().hex, now, now + lease_s, self.lane)
                woken.append(self.parked[holder])
            else:
                del self.holders[holder]
        self.waiters = {h: waiter for h, waiter in self.waiters.items() if h in self.parked or waiter.deadline_s > now}

    def hand_off(self, now: float, lease_s: float, woken: list[str]) -> None:
        """Free slots go to the head of the line if it is parked (a polling head keeps one for its next look);
        then the next parked waiters, up to half the limit, are woken ahead of their slot."""
        while len(self.holders) < self.limit and self.waiters:
            head = min(self.waiters, key=lambda h: self.waiters[h].place)
            if head not in self.parked:
                break
            del self.waiters[head]
            self.holders[head] = Lease(self.name, head, uuid.uuid4().hex, now, now + lease_s, self.lane)
            if self.prewoken.pop(head, -1.0) < 0:  # woken ahead: its record was sent already
                woken.append(self.parked[head])
        self.wake_ahead(now, woken)

    def wake_ahead(self, now: float, woken: list[str]) -> None:
        ahead = woken_ahead(self.limit)
        count = sum(1 for score in self.prewoken.values() if score >= 0)
        for holder in sorted(self.waiters, key=lambda h: self.waiters[h].place)[:ahead]:
            if count >= ahead:
                return
            if holder not in self.prewoken and holder in self.parked:
                self.prewoken[holder] = now
                woken.append(self.parked[holder])
                count += 1

    def rank(self, holder_id: str) -> int:
        line = sorted(self.waiters, key=lambda h: self.waiters[h].place)
        return line.index(holder_id)

    def join(self, holder_id: str, priority: int) -> _Waiter:
        waiter = self.waiters.get(holder_id)
        if waiter is None:
            self.arrivals += 1
            waiter = self.waiters[holder_id] = _Waiter((priority, self.arrivals), 0.0)
        return waiter


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
        # Wake records of woken requests, in wake order: what the Redis store pushes to the broker.
        self.woken: list[str] = []

    def _site(self, site_code: str, lane: str | None, now: float) -> _Site:
        site = self._sites.setdefault(_pool(site_code, lane), _Site(site_code, lane))
        site.reclaim(now, self._lease_s, self.woken)
        return site

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
        join: bool = True,
        now_s: float | None = None,
    ) -> AcquireResult:
        """A slot for `holder_id` (of the site or one of its lanes: a cap of its own), or its place in line.

        Asking again renews a lease or keeps a place.
        """
        now = self._now() if now_s is None else now_s
        site_code = validate_site_code(site_code)
        site = self._site(site_code, lane, now)
        site.limit = limit
        site.hand_off(now, self._lease_s, self.woken)
        held = site.holders.get(holder_id)
        if held is not None:
            site.holders[holder_id] = held = replace(held, expires_at_s=now + self._lease_s)
            site.waiters.pop(holder_id, None)
            site.parked.pop(holder_id, None)
            site.prewoken.pop(holder_id, None)
            return Granted(held)
        in_use = len(site.holders)
        if join:
            site.join(holder_id, priority).deadline_s = now + self._waiter_ttl_s
            rank = site.rank(holder_id)
            grant = rank < limit - in_use
        else:
            rank = site.rank(holder_id) if holder_id in site.waiters else len(site.waiters)
            grant = in_use < limit and not site.waiters
        if grant:
            site.waiters.pop(holder_id, None)
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

    def park(
        self, site_code: str, holder_id: str, limit: int, *, priority: int, wake: str, now_s: float | None = None
    ) -> Parked:
        """In the site's line with its wake record; a free slot wakes it at once."""
        now = self._now() if now_s is None else now_s
        site = self._site(validate_site_code(site_code), None, now)
        site.limit = limit
        if holder_id in site.prewoken:
            site.prewoken[holder_id] = -1.0  # woken ahead, it came back: woken with its slot next time
        site.parked[holder_id] = wake
        granted_before = holder_id in site.holders
        if not granted_before:
            site.join(holder_id, priority)
        site.hand_off(now, self._lease_s, self.woken)
        if holder_id in site.holders:
            if granted_before:  # its grant sent nothing this message could claim (slots.lua `park`)
                self.woken.append(wake)
            return Parked(woken=True, rank=0, in_use=len(site.holders), waiting=len(site.waiters))
        return Parked(False, site.rank(holder_id), len(site.holders), len(site.waiters))

    def await_slot(
        self, site_code: str, holder_id: str, limit: int, *, priority: int, timeout_s: float
    ) -> Granted | None:
        """A slot free now, or None: nothing else runs while a test waits, so no release could come."""
        answer = self.try_acquire(site_code, holder_id, limit, priority=priority, join=False)
        return answer if isinstance(answer, Granted) else None

    def await_woken_slot(
        self, site_code: str, holder_id: str, limit: int, *, priority: int, timeout_s: float
    ) -> Granted | None:
        """This stand-in wakes no one ahead of its slot: a slot free now, or None (the caller parks)."""
        answer = self.try_acquire(site_code, holder_id, limit, priority=priority, join=False)
        return answer if isinstance(answer, Granted) else None

    def leave(self, site_code: str, holder_id: str, *, now_s: float | None = None) -> bool:
        """Whatever `holder_id` holds or waits for at the site goes."""
        now = self._now() if now_s is None else now_s
        site = self._site(validate_site_code(site_code), None, now)
        left = site.holders.pop(holder_id, None) is not None
        left = site.waiters.pop(holder_id, None) is not None or left
        site.parked.pop(holder_id, None)
        site.prewoken.pop(holder_id, None)
        site.hand_off(now, self._lease_s, self.woken)
        return left

    def sweep(self, site_code: str, limit: int, *, now_s: float | None = None) -> SweepResult:
        """Hand out slots freed by lapsed leases; wake again the woken that never claimed."""
        now = self._now() if now_s is None else now_s
        site = self._site(validate_site_code(site_code), None, now)
        site.limit = limit
        site.hand_off(now, self._lease_s, self.woken)
        return SweepResult(len(site.holders), len(site.waiters), len(site.parked))

    def release(self, lease: Lease, *, now_s: float | None = None) -> bool:
        """Give the slot back (to a parked head of the line, woken now); False if already released or reclaimed."""
        now = self._now() if now_s is None else now_s
        site = self._sites.get(_pool(lease.site_code, lease.lane))
        held = None if site is None else site.holders.get(lease.holder_id)
        if site is None or held is None or held.token != lease.token:
            return False
        del site.holders[lease.holder_id]
        site.parked.pop(lease.holder_id, None)
        site.ewma_hold_s = self._average(site.ewma_hold_s, max(0.0, now - held.acquired_at_s))
        if site.last_release_at is not None and site.waiters:
            gap_s = min(max(0.0, now - site.last_release_at), self._max_retry_after_s)
            site.ewma_gap_s = self._average(site.ewma_gap_s, gap_s)
        site.last_release_at = now
        site.reclaim(now, self._lease_s, self.woken)
        site.hand_off(now, self._lease_s, self.woken)
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
        if site is None or site.waiters.pop(holder_id, None) is None:
            return False
        site.hand_off(self._now(), self._lease_s, self.woken)
        return True

    def _average(self, previous: float | None, sample: float) -> float:
        return sample if previous is None else self._alpha * sample + (1 - self._alpha) * previous


def _pool(site_code: str, lane: str | None) -> str:
    """The slot pool of a site, or of one of its lanes (the Redis store keeps them under separate keys)."""
    return site_code if lane is None else f"{site_code}.{lane}"
