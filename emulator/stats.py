"""Server statistics: counters and CPU per WS-Man operation, awaitable by tests (no sleeps)."""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["ServerStats", "percentile"]

_CPU_SAMPLES_KEPT = 20_000
_WAIT_SLICE_S = 0.5


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(fraction * len(sorted_values))))
    return sorted_values[rank - 1]


class ServerStats:
    """Counters and per-operation CPU samples; `wait_for` lets tests await a counter, not sleep."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._condition = threading.Condition()
        self._counters: dict[str, int] = {}
        self._cpu_s: deque[float] = deque(maxlen=_CPU_SAMPLES_KEPT)
        self._operations = 0
        self._started_at = clock()
        self._first_at: float | None = None
        self._last_at: float | None = None

    def incr(self, name: str, amount: int = 1) -> None:
        with self._condition:
            self._counters[name] = self._counters.get(name, 0) + amount
            self._condition.notify_all()

    def record_operation(self, cpu_s: float) -> None:
        """One WS-Man operation answered, costing `cpu_s` seconds of the handling thread's CPU."""
        now = self._clock()
        with self._condition:
            self._operations += 1
            self._cpu_s.append(cpu_s)
            if self._first_at is None:
                self._first_at = now
            self._last_at = now
            self._condition.notify_all()

    def wait_for_operations(self, at_least: int, timeout_s: float) -> bool:
        """Block until `at_least` operations are recorded; one is recorded just after its reply."""
        with self._condition:
            return self._condition.wait_for(lambda: self._operations >= at_least, timeout_s)

    def count(self, name: str) -> int:
        with self._condition:
            return self._counters.get(name, 0)

    def wait_for(self, name: str, at_least: int, timeout_s: float) -> bool:
        """Block until counter `name` reaches `at_least` (True) or `timeout_s` passes (False)."""
        deadline = self._clock() + timeout_s
        with self._condition:
            while self._counters.get(name, 0) < at_least:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return False
                self._condition.wait(min(remaining, _WAIT_SLICE_S))
            return True

    def reset(self) -> None:
        with self._condition:
            self._counters.clear()
            self._cpu_s.clear()
            self._operations = 0
            self._started_at = self._clock()
            self._first_at = self._last_at = None

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready: operations, CPU ms per operation (mean/p50/p95), operations/s, counters."""
        with self._condition:
            samples_ms = sorted(sample * 1000.0 for sample in self._cpu_s)
            operations = self._operations
            elapsed_s = self._clock() - self._started_at
            active_s = (self._last_at - self._started_at) if self._last_at is not None else 0.0
            counters = dict(sorted(self._counters.items()))
        return {
            "http_responses": sum(count for name, count in counters.items() if name.startswith("http_")),
            "operations": operations,
            "elapsed_s": round(elapsed_s, 3),
            # Rate over the span from start/reset to the last operation, so idle time after a
            # burst does not dilute it.
            "operations_per_s": round(operations / active_s, 1) if active_s > 0 else 0.0,
            "cpu_ms_per_operation": {
                "samples": len(samples_ms),
                "mean": round(statistics.fmean(samples_ms), 3) if samples_ms else 0.0,
                "p50": round(percentile(samples_ms, 0.50), 3),
                "p95": round(percentile(samples_ms, 0.95), 3),
                "max": round(samples_ms[-1], 3) if samples_ms else 0.0,
            },
            "counters": counters,
        }
