"""The time an attempt may still take: one deadline shared by every provider call made for it.

Celery's time limits are not enforced by the threads pool (the pool the workers run), so a
provider that never answers would hold an attempt, its thread and its watch deadlines forever.
The use case bounds itself instead: the attempt gets a `Deadline` (the soft time limit from the
delivery's start), each WS-Man call's socket timeout is what is left of it (never more than the
provider's read timeout), in-call retries stop when no try fits before it, and the verification
wait ends with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Deadline"]


@dataclass(frozen=True)
class Deadline:
    """A point on a monotonic clock (`clock`, time.monotonic by default) after which nothing more starts."""

    at_s: float
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    @classmethod
    def after(cls, budget_s: float, *, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(clock() + budget_s, clock)

    def remaining_s(self) -> float:
        """Seconds left (0 once passed)."""
        return max(0.0, self.at_s - self.clock())

    def expired(self) -> bool:
        return self.remaining_s() <= 0

    def within(self, budget_s: float) -> Deadline:
        """This deadline, or `budget_s` from now if that comes first."""
        return Deadline(min(self.at_s, self.clock() + budget_s), self.clock)
