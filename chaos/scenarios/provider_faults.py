"""A seeded mix of provider faults: what a busy SMS Provider behind HTTP.sys throws at clients.

The emulator draws, per WS-Man operation and from its seed: HTTP 503, connection reset,
w:TimedOut, the WinRM quota fault and WBEM_E_FAILED; every reply is slowed by an exponential
latency (mean 80 ms, capped at 0.8 s); keep-alive connections idle for 0.2 s are closed like
HTTP.sys does (requests are paced, so sessions do go idle); the per-user quota is below the
workers' combined concurrency, so real quota faults happen too; and STORAGE_COMPRESS media
that are not ready become ready after two failed refreshes. One fault of each kind is queued
first, so even a small run meets every kind.

Promise: 0 lost, 0 duplicate finals, 0 extra provider refreshes (every fault here happens
before the provider acts, so no retry may refresh twice), and every kind of fault happened.
The faults go on for as long as requests reach the provider, so the fault "ends" when the last
one happened (the emulator's counts, watched on a thread): lateness counts from there.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, Final

from chaos.report import Check, Row
from chaos.rig import Rig
from chaos.scenario import RunOptions, Scenario, finish, rig_config
from chaos.workload import PackagePool, compress_mix, send_all, valid_requests
from emulator.settings import FaultRates

__all__ = ["SCENARIO"]

NAME: Final = "provider-faults"
FAULT_RATES: Final = FaultRates(
    http_503=0.04, connection_reset=0.04, timeout_fault=0.03, quota_fault=0.02, generic_failure=0.02
)
LATENCY_MEAN_S: Final = 0.08
IDLE_TIMEOUT_S: Final = 0.2
QUOTA_PER_USER: Final = 6  # two workers x 4 threads = 8 concurrent operations at most
SEND_INTERVAL_S: Final = 0.03
FAULT_WATCH_S: Final = 0.1
COMPRESS_SHARE_OF_REQUESTS: Final = 0.2
# The server's own counters of the same faults arising naturally (not drawn from the plan).
_NATURAL: Final = {
    "timeout_fault": "operation_timeouts",
    "quota_fault": "quota_rejections",
    "idle_close": "idle_closes",
}


class FaultClock:
    """When the emulator last counted a fault that hit an operation (drawn, a natural w:TimedOut or
    quota fault), looked at every FAULT_WATCH_S. Idle closes do not count: they go on after the
    last request, whenever a connection sits idle."""

    def __init__(self, rig: Rig) -> None:
        self._rig = rig
        self.last_epoch_s: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="chaos-fault-clock", daemon=True)

    def total(self) -> int:
        injected: dict[str, int] = self._rig.emulator.faults.snapshot()["injected"]
        natural = (self._rig.emulator.stats.count(_NATURAL[kind]) for kind in _HIT_OPERATIONS)
        return sum(injected.values()) + sum(natural)

    def _watch(self) -> None:
        seen = self.total()
        while not self._stop.wait(FAULT_WATCH_S):  # counters of this process: polled, cheaply
            now = self.total()
            if now != seen:
                seen, self.last_epoch_s = now, time.time()

    def __enter__(self) -> FaultClock:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)


_HIT_OPERATIONS: Final = ("timeout_fault", "quota_fault")


def faults_happened(rig: Rig) -> tuple[Check, dict[str, Any]]:
    """How often each kind happened: drawn from the fault plan, or arising in the server itself."""
    seen: dict[str, int] = dict(rig.emulator.faults.snapshot()["injected"])
    for kind, counter in _NATURAL.items():
        seen[kind] = seen.get(kind, 0) + rig.emulator.stats.count(counter)
    missing = [kind for kind, count in seen.items() if count == 0]
    return Check("every fault kind happened", not missing, f"never happened: {missing}" if missing else ""), seen


def run(options: RunOptions) -> Row:
    rng = random.Random(options.seed)
    config = rig_config(
        options,
        compress_share=0.3,
        medium_not_ready_share=0.6,
        medium_ready_after_attempts=2,
        fault_rates=FAULT_RATES,
        latency_s=LATENCY_MEAN_S,
        latency_distribution="exponential",
        idle_timeout_s=IDLE_TIMEOUT_S,
        max_concurrent_operations_per_user=QUOTA_PER_USER,
    )
    with Rig(options.workdir / NAME, config, seed=options.seed) as rig:
        for kind in FAULT_RATES.as_dict():
            rig.emulator.faults.inject_next(kind)
        pool = PackagePool(rig.catalogue(), rng)

        outgoing = valid_requests(
            pool, rng, options.requests, pick=compress_mix(COMPRESS_SHARE_OF_REQUESTS), verify_share=0.2
        )
        with FaultClock(rig) as clock:
            first_send = send_all(rig, outgoing, interval_s=SEND_INTERVAL_S)
            rig.drain([m.sent.task_id for m in outgoing])
        happened, counts = faults_happened(rig)
        return finish(
            rig,
            NAME,
            [m.sent for m in outgoing],
            first_send_epoch_s=first_send,
            fault_ended_epoch_s=clock.last_epoch_s,
            checks=[happened],
            details={"faults": counts},
        )


SCENARIO: Final = Scenario(
    NAME,
    "503, resets, w:TimedOut, quota, idle closes, slow replies, media becoming ready: 0 lost, 0 dup, 0 extra",
    run,
)
