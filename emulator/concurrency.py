"""The highest number of WS-Man operations in flight at once, per user and in total.

An operation counts from its request fully read (and authenticated) until its reply is ready
to be written, whatever the answer: Get, Invoke, Enumerate, Pull, Release, quota rejections and
injected faults alike. The reply is written after the count ends, so a client that has its reply
is no longer counted: what a client-side concurrency cap promises is exactly this number.
Peaks are since start or since the last `reset()` (which lowers them to what is in flight then).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["ConcurrencyMeter"]


class ConcurrencyMeter:
    """Thread-safe in-flight counts and their high-water marks; users are compared case-insensitively."""

    def __init__(self, wall_clock: Callable[[], float] = time.time) -> None:
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._current: dict[str, int] = {}
        self._peak: dict[str, int] = {}
        self._total = 0
        self._peak_total = 0
        self._operations = 0
        self._since = wall_clock()

    @contextlib.contextmanager
    def track(self, user: str) -> Iterator[None]:
        """Count one operation of `user` while the block runs."""
        key = user.casefold()
        with self._lock:
            current = self._current.get(key, 0) + 1
            self._current[key] = current
            self._peak[key] = max(self._peak.get(key, 0), current)
            self._total += 1
            self._peak_total = max(self._peak_total, self._total)
            self._operations += 1
        try:
            yield
        finally:
            with self._lock:
                self._current[key] -= 1
                if not self._current[key]:
                    del self._current[key]
                self._total -= 1

    def peak(self, user: str | None = None) -> int:
        """The high-water mark of one user (None: of all users together)."""
        with self._lock:
            return self._peak_total if user is None else self._peak.get(user.casefold(), 0)

    def reset(self) -> None:
        """Start the marks afresh from what is in flight now."""
        with self._lock:
            self._peak = dict(self._current)
            self._peak_total = self._total
            self._operations = 0
            self._since = self._wall_clock()

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready: total and per-user current and peak counts, operations counted, since when."""
        with self._lock:
            users = sorted(set(self._peak) | set(self._current))
            return {
                "total": {"current": self._total, "peak": self._peak_total},
                "per_user": {
                    user: {"current": self._current.get(user, 0), "peak": self._peak.get(user, 0)} for user in users
                },
                "operations": self._operations,
                "since": self._since,
            }
