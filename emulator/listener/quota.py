"""Admission of WS-Man operations: WinRM's per-user operation quota, and a gate tests hold.

`OperationQuota` caps the operations in flight per user like WinRM's
MaxConcurrentOperationsPerUser (the over-quota one gets the quota fault); its counts are what
`Emulator.in_flight` / `wait_in_flight` / `wait_drained` read. `OperationGate` lets a test hold
admitted operations in flight, to reach a concurrency deterministically instead of sleeping.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Final

__all__ = ["GATE_MAX_HOLD_S", "OperationGate", "OperationQuota"]

# Bounded: a test that forgets to release cannot wedge a handler thread forever.
GATE_MAX_HOLD_S: Final = 60.0


class OperationQuota:
    """In-flight WS-Man operations per user, capped like WinRM's MaxConcurrentOperationsPerUser."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._condition = threading.Condition()
        self._in_flight: dict[str, int] = {}

    @contextlib.contextmanager
    def enter(self, user: str) -> Iterator[bool]:
        """Count one operation for `user` while the block runs; yields False when over the cap."""
        key = user.casefold()
        with self._condition:
            admitted = self._in_flight.get(key, 0) < self._limit
            if admitted:
                self._in_flight[key] = self._in_flight.get(key, 0) + 1
                self._condition.notify_all()
        try:
            yield admitted
        finally:
            if admitted:
                with self._condition:
                    self._in_flight[key] -= 1
                    if not self._in_flight[key]:
                        del self._in_flight[key]
                    self._condition.notify_all()

    def in_flight(self, user: str) -> int:
        with self._condition:
            return self._in_flight.get(user.casefold(), 0)

    def wait_drained(self, user: str, timeout_s: float) -> bool:
        """Block until `user` has no operation in flight (False on timeout).

        A client can read its reply before the server thread leaves the operation, so "the
        reply arrived" does not yet mean "the count dropped": wait for the count itself.
        """
        with self._condition:
            return self._condition.wait_for(lambda: self._in_flight.get(user.casefold(), 0) == 0, timeout_s)

    def snapshot(self) -> dict[str, int]:
        with self._condition:
            return dict(self._in_flight)

    def wait_for(self, user: str, count: int, timeout_s: float) -> bool:
        """Block until `user` has at least `count` operations in flight (False on timeout)."""
        with self._condition:
            return self._condition.wait_for(lambda: self._in_flight.get(user.casefold(), 0) >= count, timeout_s)


class OperationGate:
    """Lets tests hold admitted operations in flight (deterministic concurrency, no sleeps)."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def pass_through(self) -> None:
        # Bounded: a test that forgets to release cannot wedge a handler thread forever
        # (Emulator.stop() releases the gate too).
        self._open.wait(GATE_MAX_HOLD_S)
