"""Redistribution markers in a dict (worker/stores/redistribution_marks.py: RedisRedistributionMarks).

The first claim of a package and DP within its window wins, as SET NX PX does; time comes from
the clock the test moves. `claims` lists every claim granted, for a test to count.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["MemoryRedistributionMarks"]


class MemoryRedistributionMarks:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._until: dict[tuple[str, str, str], float] = {}
        self.claims: list[tuple[str, str, str]] = []

    def claim(self, site_code: str, package_id: str, nal_path: str, *, window_s: float) -> bool:
        key = (site_code.upper(), package_id.upper(), nal_path.casefold())
        now = self._clock()
        if self._until.get(key, -1.0) > now:
            return False
        self._until[key] = now + window_s
        self.claims.append(key)
        return True
