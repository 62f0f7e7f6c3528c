"""The provider's call log: per package Gets, Invokes, accepted and rejected refreshes, events.

Totals are kept apart from the per-package records so reading them costs the same whatever
the catalogue's size (`totals()`); the full log (`snapshot()`) carries the latest timestamped
events of each package: MAX_EVENTS_PER_PACKAGE, or fewer in a catalogue so big that the log
would otherwise hold more than MAX_EVENTS_TOTAL events (at least MIN_EVENTS_PER_PACKAGE).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from emulator.wsman import Operation

__all__ = ["MAX_EVENTS_PER_PACKAGE", "MAX_EVENTS_TOTAL", "MIN_EVENTS_PER_PACKAGE", "TOTAL_KEYS", "CallLog"]


MAX_EVENTS_PER_PACKAGE: Final = 100
MIN_EVENTS_PER_PACKAGE: Final = 10
MAX_EVENTS_TOTAL: Final = 200_000
# requests: SOAP requests answered by the provider; invokes: Invoke requests it dispatched
# (injected faults count under faults); accepted / rejected: RefreshPkgSource outcomes.
TOTAL_KEYS: Final = ("requests", "gets", "invokes", "accepted", "rejected", "enumerates", "pulls", "faults")


@dataclass(slots=True)
class _PackageLog:
    gets: int = 0
    invokes: int = 0
    accepted: int = 0
    rejected: int = 0
    events: deque[dict[str, Any]] = field(default_factory=deque)

    def as_dict(self) -> dict[str, Any]:
        return {
            "gets": self.gets,
            "invokes": self.invokes,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "events": list(self.events),
        }


class CallLog:
    """Counts and events by package, plus totals. Not thread-safe: the Provider locks."""

    def __init__(self, *, wall_clock: Callable[[], float], package_count: int = 0) -> None:
        self._wall_clock = wall_clock
        fair_share = MAX_EVENTS_TOTAL // max(1, package_count)
        self.events_per_package = max(MIN_EVENTS_PER_PACKAGE, min(MAX_EVENTS_PER_PACKAGE, fair_share))
        self._packages: dict[str, _PackageLog] = {}
        self._totals: Counter[str] = Counter()

    def count(self, key: str) -> None:
        """Bump one of TOTAL_KEYS."""
        self._totals[key] += 1

    def record(self, package_id: str, operation: Operation, user: str, result: str, accepted: bool = False) -> None:
        """One operation on a package; an invoke counts as accepted or rejected."""
        log = self._packages.get(package_id)
        if log is None:
            log = self._packages[package_id] = _PackageLog(events=deque(maxlen=self.events_per_package))
        if operation == "get":
            log.gets += 1
        elif operation == "invoke":
            log.invokes += 1
            outcome = "accepted" if accepted else "rejected"
            setattr(log, outcome, getattr(log, outcome) + 1)
            self._totals[outcome] += 1
        log.events.append({"op": operation, "at": self._wall_clock(), "user": user, "result": result})

    def totals(self) -> dict[str, int]:
        return {key: self._totals[key] for key in TOTAL_KEYS}

    def snapshot(self) -> dict[str, Any]:
        return {
            "packages": {package_id: log.as_dict() for package_id, log in self._packages.items()},
            "totals": self.totals(),
        }

    def reset(self) -> None:
        self._packages.clear()
        self._totals.clear()
