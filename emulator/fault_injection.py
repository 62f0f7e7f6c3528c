"""Seeded decisions about injected latency and operational faults (pure: no I/O, no sleeping).

The server asks `FaultPlan.decide()` once per WS-Man operation admitted by the per-user quota
(never for authentication handshakes, the empty priming POST or a quota rejection) and acts on
the answer: wait `delay_s` (only up to the request's OperationTimeout, then w:TimedOut), then
fail with `kind` or answer normally. Every decision draws the same number of values from one
`random.Random(seed)`, so a sequential run repeats exactly whatever faults are configured.

Rates are per-operation probabilities, one draw picks at most one kind (their sum must not
exceed 1). `inject_next(kind, count)` queues deterministic failures that take precedence over
random ones: tests use it instead of rates.

One fault is aimed, not drawn: `lose_invoke_while_pending(package_id, count)` arms the loss of the
next `count` Invokes of RefreshPkgSource on that package that arrive while an older refresh of it
is still pending in Distribution Manager (ActionInProgress 1). The listener asks
`take_lost_invoke` and, when it says so, neither runs the Invoke nor answers it (the fence's
counter-example: nothing of the request landed, yet SourceVersion will rise).
"""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from emulator.settings import FAULT_KINDS, EmulatorSettings, FaultRates, LatencyDistribution

__all__ = [
    "LATENCY_DISTRIBUTIONS",
    "MAX_LATENCY_S",
    "MAX_QUEUED_FAULTS",
    "SOAP_FAULT_KINDS",
    "Decision",
    "FaultKind",
    "FaultPlan",
    "parse_fault_kind",
    "parse_latency_distribution",
]

FaultKind = Literal["http_503", "connection_reset", "lost_reply", "timeout_fault", "quota_fault", "generic_failure"]
# The kinds answered with a SOAP fault built by the protocol core (Provider.fault_reply);
# the others are HTTP-level failures the server produces itself.
SOAP_FAULT_KINDS: frozenset[str] = frozenset({"timeout_fault", "quota_fault", "generic_failure"})
LATENCY_DISTRIBUTIONS: tuple[str, ...] = get_args(LatencyDistribution)
# An exponential draw is unbounded; cap it so one unlucky request cannot stall a test run.
_EXPONENTIAL_CAP_FACTOR = 10.0
# Mean added latency at most a minute: more is no test of anything, and it keeps every wait
# far inside what Event.wait / time.sleep accept.
MAX_LATENCY_S = 60.0
# Queued injected faults, all calls together: a typo'd count must not grow memory without end.
MAX_QUEUED_FAULTS = 10_000

assert set(get_args(FaultKind)) == set(FAULT_KINDS), "FaultKind must list settings.FAULT_KINDS"


@dataclass(frozen=True)
class Decision:
    """What to do with one WS-Man operation: wait `delay_s`, then fail with `kind` (None = answer)."""

    delay_s: float
    kind: FaultKind | None


def parse_fault_kind(value: str) -> FaultKind:
    """Return `value` as a fault kind or raise ValueError naming the valid kinds."""
    if value not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {value!r}; expected one of {', '.join(FAULT_KINDS)}")
    return cast(FaultKind, value)


def parse_latency_distribution(value: str) -> LatencyDistribution:
    """Return `value` as a latency distribution or raise ValueError naming the valid ones."""
    if value not in LATENCY_DISTRIBUTIONS:
        raise ValueError(f"unknown latency distribution {value!r}; expected one of {', '.join(LATENCY_DISTRIBUTIONS)}")
    return cast(LatencyDistribution, value)


def _validated_rates(rates: Mapping[str, float]) -> dict[str, float]:
    checked: dict[str, float] = {}
    for kind, rate in rates.items():
        parse_fault_kind(kind)
        rate_f = float(rate)
        if not 0.0 <= rate_f <= 1.0 or math.isnan(rate_f):
            raise ValueError(f"fault rate for {kind} must be between 0 and 1, got {rate!r}")
        checked[kind] = rate_f
    if sum(checked.values()) > 1.0 + 1e-9:
        raise ValueError("fault rates must add up to at most 1 (one draw picks at most one kind)")
    return checked


def _validated_latency(latency_s: float) -> float:
    latency_f = float(latency_s)
    if not 0.0 <= latency_f <= MAX_LATENCY_S:  # NaN and infinities fail too
        raise ValueError(f"latency must be between 0 and {MAX_LATENCY_S:g} s, got {latency_s!r}")
    return latency_f


class FaultPlan:
    """Thread-safe, seeded source of per-operation latency and fault decisions."""

    def __init__(
        self,
        *,
        seed: int = 1,
        rates: FaultRates | Mapping[str, float] | None = None,
        latency_s: float = 0.0,
        latency_distribution: LatencyDistribution = "fixed",
    ) -> None:
        self._lock = threading.Lock()
        self._seed = seed
        self._random = random.Random(seed)
        initial = rates.as_dict() if isinstance(rates, FaultRates) else dict(rates or {})
        self._rates = {kind: 0.0 for kind in FAULT_KINDS} | _validated_rates(initial)
        self._latency_s = _validated_latency(latency_s)
        self._distribution = parse_latency_distribution(latency_distribution)
        self._queue: deque[FaultKind] = deque()
        self._decisions = 0
        self._injected: dict[str, int] = {kind: 0 for kind in FAULT_KINDS}
        self._lost_invokes_armed: dict[str, int] = {}  # PackageID (upper case) -> Invokes still to lose
        self._lost_invokes = 0

    @classmethod
    def from_settings(cls, settings: EmulatorSettings) -> FaultPlan:
        """Build the plan the settings describe (seed, rates, latency)."""
        return cls(
            seed=settings.seed,
            rates=settings.fault_rates,
            latency_s=settings.latency_s,
            latency_distribution=settings.latency_distribution,
        )

    def set_rates(self, rates: Mapping[str, float]) -> None:
        """Replace the rates of the kinds named in `rates` (others keep theirs)."""
        checked = _validated_rates(rates)
        with self._lock:
            merged = self._rates | checked
            _validated_rates(merged)
            self._rates = merged

    def set_latency(self, latency_s: float, distribution: LatencyDistribution | None = None) -> None:
        """Set the mean added latency (and optionally its distribution)."""
        latency_f = _validated_latency(latency_s)
        dist = parse_latency_distribution(distribution) if distribution is not None else None
        with self._lock:
            self._latency_s = latency_f
            if dist is not None:
                self._distribution = dist

    def inject_next(self, kind: str, count: int = 1) -> None:
        """Make the next `count` WS-Man operations fail with `kind`, before any random fault.

        ValueError when `count` < 1 or the queue would hold more than MAX_QUEUED_FAULTS.
        """
        checked = parse_fault_kind(kind)
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        with self._lock:
            if len(self._queue) + count > MAX_QUEUED_FAULTS:
                raise ValueError(
                    f"at most {MAX_QUEUED_FAULTS} injected faults can be queued ({len(self._queue)} already are)"
                )
            self._queue.extend([checked] * count)

    def lose_invoke_while_pending(self, package_id: str, count: int = 1) -> None:
        """Lose the next `count` Invokes of RefreshPkgSource on `package_id` that arrive while an
        older refresh of it is pending in DistMgr: not run, not answered (ValueError unless
        `count` >= 1 and the total armed stays within MAX_QUEUED_FAULTS)."""
        if not package_id:
            raise ValueError("package_id must not be empty")
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        key = package_id.upper()
        with self._lock:
            if sum(self._lost_invokes_armed.values()) + count > MAX_QUEUED_FAULTS:
                raise ValueError(f"at most {MAX_QUEUED_FAULTS} lost Invokes can be armed")
            self._lost_invokes_armed[key] = self._lost_invokes_armed.get(key, 0) + count

    def loses_invokes(self) -> bool:
        """Any lost Invoke armed (cheap: the listener asks before parsing anything)."""
        return bool(self._lost_invokes_armed)

    def take_lost_invoke(self, package_id: str) -> bool:
        """True (and one fewer armed) when an Invoke of this package, pending now, is to be lost."""
        key = package_id.upper()
        with self._lock:
            left = self._lost_invokes_armed.get(key, 0)
            if left <= 0:
                return False
            if left == 1:
                del self._lost_invokes_armed[key]
            else:
                self._lost_invokes_armed[key] = left - 1
            self._lost_invokes += 1
            return True

    def clear(self) -> None:
        """Drop every rate, the queued and armed faults and the added latency (the seed sequence continues)."""
        with self._lock:
            self._rates = {kind: 0.0 for kind in FAULT_KINDS}
            self._queue.clear()
            self._lost_invokes_armed.clear()
            self._latency_s = 0.0
            self._distribution = "fixed"

    def decide(self) -> Decision:
        """Draw the decision for the next WS-Man operation."""
        with self._lock:
            self._decisions += 1
            # Always draw both values so the sequence does not depend on which branch ran.
            fault_draw = self._random.random()
            latency_draw = self._random.random()
            kind = self._queue.popleft() if self._queue else self._pick_kind(fault_draw)
            if kind is not None:
                self._injected[kind] += 1
            return Decision(delay_s=self._delay_s(latency_draw), kind=kind)

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready view: rates, latency, queued faults, counts of decisions and injected faults."""
        with self._lock:
            return {
                "seed": self._seed,
                "rates": dict(self._rates),
                "latency_ms": self._latency_s * 1000.0,
                "latency_distribution": self._distribution,
                "next": list(self._queue),
                "decisions": self._decisions,
                "injected": dict(self._injected),
                "lose_invoke_while_pending": dict(self._lost_invokes_armed),
                "lost_invokes_while_pending": self._lost_invokes,
            }

    def _pick_kind(self, draw: float) -> FaultKind | None:
        threshold = 0.0
        for kind in FAULT_KINDS:
            threshold += self._rates[kind]
            if draw < threshold:
                return cast(FaultKind, kind)
        return None

    def _delay_s(self, draw: float) -> float:
        mean_s = self._latency_s
        if mean_s == 0.0:
            return 0.0
        if self._distribution == "uniform":
            return 2.0 * mean_s * draw  # uniform on [0, 2 * mean)
        if self._distribution == "exponential":
            # Inverse CDF of the exponential law with this mean, capped (see _EXPONENTIAL_CAP_FACTOR).
            return min(-mean_s * math.log(1.0 - draw), _EXPONENTIAL_CAP_FACTOR * mean_s)
        return mean_s
