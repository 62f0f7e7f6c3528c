"""Distribution Manager's package queue (pure: an injected clock, no threads, no sleeping).

What ConfigMgr does after `RefreshPkgSource` returns 0 (*accepted*): the provider marks the
package with an update action and Distribution Manager, which works on a limited number of
packages at a time ("Maximum number of packages", default 3), later snapshots the source and
bumps SourceVersion. The model:

* `submit` queues a package FIFO. A package already queued (not yet processing) is coalesced
  into that entry. A package being processed queues again and starts no earlier than the
  current processing ends (one package is never processed by two threads at once).
* `threads` workers each take `time_per_package_s` per package (0 = at once).
* Time is modelled lazily: every call first replays, in time order, each start and finish due
  by the clock's now; `advance()` hands over the packages finished since it was last called,
  with the moment each finished. Calling it often or rarely gives the same history, so tests
  drive it with a fake clock.
* `hold()` stops starting packages (those processing still finish); `release()` resumes from
  the release time. `drain()` finishes everything queued or processing at once (test control).

Not thread-safe: the owner (the catalogue, under the provider's lock) serialises calls.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["DistMgr", "PackageState", "Processed"]

PackageState = Literal["queued", "processing", "processing_and_queued"]


@dataclass(frozen=True, slots=True)
class Processed:
    """A package DistMgr finished processing, and when (on the model's clock)."""

    package_id: str
    finished_at: float


@dataclass(slots=True)
class _Queued:
    seq: int  # FIFO position
    ready_at: float  # enqueue time, or the end of the same package's processing


@dataclass(frozen=True, slots=True)
class _Start:
    start_at: float
    package_id: str
    slot: int


class DistMgr:
    """FIFO queue and `threads` workers, advanced lazily on an injected clock."""

    def __init__(self, *, threads: int, time_per_package_s: float, clock: Callable[[], float]) -> None:
        if threads < 1:
            raise ValueError(f"DistMgr needs at least one thread, got {threads}")
        self._clock = clock
        self._time_per_package_s = _checked_duration(time_per_package_s)
        self._slot_free_at = [-math.inf] * threads
        self._queue: OrderedDict[str, _Queued] = OrderedDict()
        # Queued packages that were processing when queued (at most `threads`): they may start
        # out of FIFO order, so they are looked at apart from the queue's head.
        self._blocked: set[str] = set()
        self._running: dict[str, float] = {}  # package_id -> finish time
        self._finishing: list[tuple[float, int, str]] = []  # heap of (finish time, seq, package_id)
        self._seq = 0
        self._held = False
        self._not_before = -math.inf  # starts happen no earlier than the last release
        self._counts = {"accepted": 0, "coalesced": 0, "started": 0, "processed": 0}
        self._finished: list[Processed] = []  # processed, not yet collected by advance()

    # ------------------------------------------------------------------ work

    def submit(self, package_id: str) -> bool:
        """Queue an accepted refresh; False when it was coalesced into one already queued."""
        self._replay()
        now = self._clock()
        self._counts["accepted"] += 1
        if package_id in self._queue:
            self._counts["coalesced"] += 1
            return False
        running_until = self._running.get(package_id)
        if running_until is not None:
            self._blocked.add(package_id)
        self._seq += 1
        self._queue[package_id] = _Queued(self._seq, now if running_until is None else max(now, running_until))
        self._replay()  # with a free thread and no time per package, it is processed at once
        return True

    def advance(self) -> list[Processed]:
        """Every package finished by now and not yet reported, in finish order."""
        self._replay()
        finished, self._finished = self._finished, []
        return finished

    # ------------------------------------------------------------------ control

    def hold(self) -> None:
        """Stop starting packages; those processing still finish."""
        self._replay()
        self._held = True

    def release(self) -> None:
        """Start packages again, from now on."""
        self._replay()
        if self._held:
            self._held = False
            self._not_before = self._clock()
            self._replay()

    def drain(self) -> None:
        """Finish, now, every package processing and then every one queued (FIFO)."""
        self._replay()
        now = self._clock()
        while self._finishing:
            _finish_at, _seq, package_id = heapq.heappop(self._finishing)
            del self._running[package_id]
            self._processed(package_id, now)
        for package_id in self._queue:
            self._counts["started"] += 1
            self._processed(package_id, now)
        self._queue.clear()
        self._blocked.clear()
        self._slot_free_at = [min(free_at, now) for free_at in self._slot_free_at]

    def set_time_per_package(self, seconds: float) -> None:
        """Change the time per package, for packages that start from now on."""
        checked = _checked_duration(seconds)
        self._replay()
        self._time_per_package_s = checked
        self._replay()

    # ------------------------------------------------------------------ observation (after advance)

    def state(self, package_id: str) -> PackageState | None:
        queued = package_id in self._queue
        if package_id in self._running:
            return "processing_and_queued" if queued else "processing"
        return "queued" if queued else None

    def busy(self, package_id: str) -> bool:
        """Queued or processing: the provider shows ActionInProgress = 1."""
        return package_id in self._queue or package_id in self._running

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready: settings, queue and processing sizes, counters since start."""
        return {
            "threads": len(self._slot_free_at),
            "time_per_package_s": self._time_per_package_s,
            "held": self._held,
            "queued": len(self._queue),
            "processing": len(self._running),
            "processing_ids": sorted(self._running),
            **self._counts,
        }

    # ------------------------------------------------------------------ replay

    def _replay(self) -> None:
        """Apply, in time order, every start and finish due by now."""
        now = self._clock()
        while True:
            start = self._next_start()
            finish_at = self._finishing[0][0] if self._finishing else math.inf
            # At equal times a finish goes first, so finish order is time order.
            if finish_at <= now and (start is None or finish_at <= start.start_at):
                self._finish_next()
            elif start is not None and start.start_at <= now:
                self._start(start)
            else:
                return

    def _next_start(self) -> _Start | None:
        """The next package to start and when, were nothing to finish before then."""
        if self._held or not self._queue:
            return None
        slot = min(range(len(self._slot_free_at)), key=self._slot_free_at.__getitem__)
        floor = max(self._slot_free_at[slot], self._not_before)
        best: tuple[float, int, str] | None = None
        # The first unblocked package in FIFO order: entries ahead of it are blocked ones only.
        for package_id, queued in self._queue.items():
            if package_id not in self._blocked:
                best = (max(floor, queued.ready_at), queued.seq, package_id)
                break
        for package_id in self._blocked:
            queued = self._queue[package_id]
            candidate = (max(floor, queued.ready_at), queued.seq, package_id)
            if best is None or candidate < best:
                best = candidate
        assert best is not None
        return _Start(best[0], best[2], slot)

    def _start(self, start: _Start) -> None:
        del self._queue[start.package_id]
        self._blocked.discard(start.package_id)
        finish_at = start.start_at + self._time_per_package_s
        self._slot_free_at[start.slot] = finish_at
        self._running[start.package_id] = finish_at
        self._seq += 1
        heapq.heappush(self._finishing, (finish_at, self._seq, start.package_id))
        self._counts["started"] += 1

    def _finish_next(self) -> None:
        finish_at, _seq, package_id = heapq.heappop(self._finishing)
        del self._running[package_id]
        self._processed(package_id, finish_at)

    def _processed(self, package_id: str, finished_at: float) -> None:
        self._counts["processed"] += 1
        self._finished.append(Processed(package_id, finished_at))


def _checked_duration(seconds: float) -> float:
    value = float(seconds)
    if not 0.0 <= value < math.inf:  # NaN fails too
        raise ValueError(f"time per package must be a finite number of seconds >= 0, got {seconds!r}")
    return value
