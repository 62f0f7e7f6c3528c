"""A bulk job as its children see it, in memory: the child side of worker/stores/bulk_store.py.

What a delivery and the bulk runner do with a bulk's children, by the rules of bulk_store.lua:
a child taken from the bulk is outstanding until its final is counted (once); each check-in
refreshes its heartbeat and says whether the bulk was cancelled; a child silent for `idle_s` is
stalled (and stamped, so two sweeps do not both send it again); the last child counted ends a
running bulk `done`. Enumeration, the paced window and pending children are left out: a test
starts a bulk with its children already outstanding (`add_bulk`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from worker.domain.outcomes import Outcome
from worker.stores.bulk_store import BulkNotFoundError
from worker.usecase.values import Checkin

__all__ = ["MemoryBulkChildren"]


@dataclass
class _Bulk:
    state: Literal["running", "cancelled", "done"] = "running"
    heartbeats: dict[str, float] = field(default_factory=dict)  # outstanding child -> last sign of life
    undelivered: dict[str, float] = field(default_factory=dict)  # taken, never checked in -> when taken
    counts: Counter[str] = field(default_factory=Counter)


class MemoryBulkChildren:
    """Bulks and their outstanding children in dicts; `now` is the clock when a call passes no `now_s`."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._bulks: dict[str, _Bulk] = {}

    def add_bulk(self, bulk_id: str, child_request_ids: Iterable[str], *, now_s: float | None = None) -> None:
        """A running bulk whose children were all taken (sent): each outstanding, alive as of now."""
        now = self._time(now_s)
        children = list(child_request_ids)
        self._bulks[bulk_id] = _Bulk(heartbeats=dict.fromkeys(children, now), undelivered=dict.fromkeys(children, now))

    def cancel(self, bulk_id: str) -> bool:
        """Stop a running bulk as `cancelled`; False if it was already over."""
        bulk = self._bulk(bulk_id)
        if bulk.state != "running":
            return False
        bulk.state = "cancelled"
        return True

    def child_checkin(self, bulk_id: str, child_request_id: str, *, now_s: float | None = None) -> Checkin:
        """A sign of life from a child (its heartbeat, if outstanding) and whether its bulk was cancelled."""
        bulk = self._bulk(bulk_id)
        outstanding = child_request_id in bulk.heartbeats
        if outstanding:
            bulk.heartbeats[child_request_id] = self._time(now_s)
            bulk.undelivered.pop(child_request_id, None)
        return Checkin(outstanding=outstanding, cancelled=bulk.state == "cancelled")

    def child_finished(self, bulk_id: str, child_request_id: str, status: str) -> bool:
        """Count an outstanding child's final status once; False for a repeat or a child not outstanding."""
        bulk = self._bulk(bulk_id)
        if bulk.heartbeats.pop(child_request_id, None) is None:
            return False
        bulk.undelivered.pop(child_request_id, None)
        bulk.counts[status] += 1
        if not bulk.heartbeats and bulk.state == "running":
            bulk.state = "done"
        return True

    def child_ended(self, outcome: Outcome) -> None:
        """What the bulk runner does with every final outcome (DeliveryDeps.on_final): count a child's."""
        bulk = self._bulks.get(outcome.correlation_id or "")
        if outcome.final and bulk is not None and outcome.request_id in bulk.heartbeats:
            self.child_finished(outcome.correlation_id or "", outcome.request_id, outcome.status)

    def counts(self, bulk_id: str) -> dict[str, int]:
        """The children's final statuses counted so far."""
        return dict(self._bulk(bulk_id).counts)

    def stalled_children(
        self,
        bulk_id: str,
        *,
        idle_s: float,
        undelivered_s: float | None = None,
        max_count: int = 100,
        now_s: float | None = None,
    ) -> list[str]:
        """Outstanding children silent for `idle_s` (oldest first), then those taken `undelivered_s`
        ago and never delivered; each is stamped now."""
        now, bulk = self._time(now_s), self._bulk(bulk_id)
        silent = sorted((beat, child) for child, beat in bulk.heartbeats.items() if beat <= now - idle_s)
        stalled = [child for _, child in silent[:max_count]]
        if undelivered_s is not None:
            late = sorted((at, child) for child, at in bulk.undelivered.items() if at <= now - undelivered_s)
            stalled += [child for _, child in late if child not in stalled][: max_count - len(stalled)]
        bulk.heartbeats.update(dict.fromkeys(stalled, now))
        for child in stalled:
            if child in bulk.undelivered:
                bulk.undelivered[child] = now
        return stalled

    def _bulk(self, bulk_id: str) -> _Bulk:
        bulk = self._bulks.get(bulk_id)
        if bulk is None:
            raise BulkNotFoundError(f"no bulk job {bulk_id!r}")
        return bulk

    def _time(self, now_s: float | None) -> float:
        return self._now() if now_s is None else now_s
