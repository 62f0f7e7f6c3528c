"""Keeps this process's short Redis leases alive while it holds them, so a dead process's lapse fast.

An attempt lock and a provider slot used to be taken for as long as an attempt could possibly run
(the task time limit, the slot lease: minutes), so a worker SIGKILLed mid-attempt blocked its
request and a slot for that long. They are now short leases (seconds) that a thread of the process
renews while they are held: a live worker keeps them however long its attempt runs; a killed or
frozen one stops renewing and loses them within one lease.

A renewal that finds the lease gone (lapsed while the process was frozen, then taken by another
delivery) marks it lost: the holder checks `Held.lost` before an irreversible step (the fence
write before Invoke does) and stops instead of racing the new holder.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Held", "LeaseKeeper", "lease_keeper"]

log = logging.getLogger(__name__)

_MIN_PERIOD_S = 0.2


@dataclass(eq=False)
class Held:
    """One lease being kept: `renew()` extends it and says whether it was still ours."""

    name: str
    renew: Callable[[], bool]
    period_s: float
    due_at: float = 0.0
    lost: bool = field(default=False)
    # Never renewed past this (monotonic): a holder that failed to give its lease back (an error on
    # its way out) must not keep it for as long as the process lives.
    give_up_at: float = float("inf")


class LeaseKeeper:
    """A daemon thread renewing every kept lease once per its period (a third of its length)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._held: set[Held] = set()
        self._thread: threading.Thread | None = None

    def keep(self, name: str, renew: Callable[[], bool], *, lease_s: float, max_hold_s: float | None = None) -> Held:
        """Renew `renew` every `lease_s / 3` seconds until `drop` (or `max_hold_s`); False marks it lost."""
        period_s = max(_MIN_PERIOD_S, lease_s / 3)
        now = self._clock()
        give_up_at = float("inf") if max_hold_s is None else now + max_hold_s
        held = Held(name, renew, period_s, due_at=now + period_s, give_up_at=give_up_at)
        with self._lock:
            self._held.add(held)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="sccm-lease-keeper", daemon=True)
                self._thread.start()
            self._wake.notify()
        return held

    def drop(self, held: Held) -> None:
        with self._lock:
            self._held.discard(held)

    def held_count(self) -> int:
        with self._lock:
            return len(self._held)

    def renew_due(self) -> None:
        """One pass: renew every lease that is due (the thread's work; tests call it directly)."""
        now = self._clock()
        with self._lock:
            due = [held for held in self._held if held.due_at <= now]
        for held in due:
            if now >= held.give_up_at:
                log.warning("stopped renewing %s: held past its longest allowed hold", held.name)
                self.drop(held)
                continue
            try:
                still_ours = held.renew()
            except Exception as exc:  # Redis away: the lease may still be ours; the next pass tries again
                log.debug("renewing %s failed: %s", held.name, type(exc).__name__)
                held.due_at = self._clock() + _MIN_PERIOD_S * 5
                continue
            if still_ours:
                held.due_at = self._clock() + held.period_s
            else:
                held.lost = True
                log.warning("lost %s: it lapsed before it could be renewed (a stalled process?)", held.name)
                self.drop(held)

    def _run(self) -> None:
        while True:
            self.renew_due()
            with self._lock:
                next_due = min((held.due_at for held in self._held), default=self._clock() + 1.0)
                self._wake.wait(timeout=max(0.05, next_due - self._clock()))


lease_keeper = LeaseKeeper()
