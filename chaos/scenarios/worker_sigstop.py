"""Worker SIGSTOP: one of the two workers frozen for 45 s while it holds work, then resumed.

The workload of worker-sigkill (provider latency 0-250 ms, 80% of requests `verify`, DistMgr
0.4 s per package, 8 provider slots). Once a fifth of the finals are in and the victim holds
requests (received, no final yet), its process group is stopped (SIGSTOP) for FREEZE_S, then
continued (SIGCONT). Frozen, it renews nothing: its alive key lapses (15 s), the other worker puts
what it held back on the queue (running, prefetched, counting down) and, once the frozen
attempts' locks (20 s) and provider slots (30 s) lapse, runs them. Resumed, the frozen worker must
not run what it had taken meanwhile, and an attempt it was in the middle of stops before its
fence write or finds its request final already.

Promise: 0 lost, 0 duplicate finals, 0 extra provider refreshes, every request final within 60 s
of the resume, the requests the victim held when frozen finished by the other worker before it
resumed (recovery does not wait for a frozen worker), and both workers running at the end.
"""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Final

from chaos.report import Check, Row
from chaos.rig import Rig
from chaos.scenario import Disruptor, RunOptions, Scenario, finish
from chaos.scenarios.worker_kill import VERIFY_SHARE, crash_rig_config, received_by
from chaos.workload import PackagePool, send_all, valid_requests
from embedded.worker_process import WorkerProcess

__all__ = ["SCENARIO"]

NAME: Final = "worker-sigstop"
FREEZE_S: Final = 45.0
FREEZE_AT_SHARE: Final = 0.2
HOLDING_TIMEOUT_S: Final = 20.0
SHARE_TIMEOUT_S: Final = 120.0
_POLL_S: Final = 0.05


@dataclass
class FreezeLog:
    frozen: bool = False
    held_at_freeze: list[str] = field(default_factory=list)
    final_at_resume: int = 0  # of those held, how many were final when the victim resumed
    ended_epoch_s: float | None = None


def freeze(rig: Rig, victim: WorkerProcess, requests: int, log: FreezeLog) -> None:
    """The disruption: wait for the moment, SIGSTOP the victim's group, wait FREEZE_S, SIGCONT."""
    reached = time.monotonic() + SHARE_TIMEOUT_S
    while rig.finals_seen() < FREEZE_AT_SHARE * requests and time.monotonic() < reached:
        time.sleep(_POLL_S)  # other processes' state: no event to await
    deadline = time.monotonic() + HOLDING_TIMEOUT_S
    held: set[str] = set()
    while time.monotonic() < deadline:
        held = received_by(victim) - rig.ledger.final_task_ids()
        if held:
            break
        time.sleep(_POLL_S)
    os.killpg(victim.pid, signal.SIGSTOP)
    try:
        log.frozen = True
        log.held_at_freeze = sorted(held)
        time.sleep(FREEZE_S)  # the fault is the length of the freeze
        rig.ledger.poll()
        log.final_at_resume = len(held & rig.ledger.final_task_ids())
    finally:
        os.killpg(victim.pid, signal.SIGCONT)
        log.ended_epoch_s = time.time()


def run(options: RunOptions) -> Row:
    rng = random.Random(options.seed)
    config = crash_rig_config(options)
    with Rig(options.workdir / NAME, config, seed=options.seed) as rig:
        pool = PackagePool(rig.catalogue(), rng)
        outgoing = valid_requests(pool, rng, options.requests, verify_share=VERIFY_SHARE)
        log = FreezeLog()
        victim = rig.workers[0]
        freezer = Disruptor("freezer", lambda: freeze(rig, victim, len(outgoing), log)).start()
        first_send = send_all(rig, outgoing)
        freezer.join(SHARE_TIMEOUT_S + HOLDING_TIMEOUT_S + FREEZE_S + 30)
        rig.drain([m.sent.task_id for m in outgoing], since_epoch_s=log.ended_epoch_s)
        held = len(log.held_at_freeze)
        checks = [
            Check(
                "frozen while holding requests",
                freezer.error is None and log.frozen and held > 0,
                freezer.error or f"held {held} request(s) when frozen",
            ),
            Check(
                "what the frozen worker held was finished before it resumed",
                held > 0 and log.final_at_resume == held,
                f"{log.final_at_resume} of {held} final after {FREEZE_S:.0f} s frozen",
            ),
        ]
        return finish(
            rig,
            NAME,
            [m.sent for m in outgoing],
            first_send_epoch_s=first_send,
            fault_ended_epoch_s=log.ended_epoch_s,
            checks=checks,
            details={"freeze_s": FREEZE_S, "held_at_freeze": log.held_at_freeze[:10], "victim_pid": victim.pid},
        )


SCENARIO: Final = Scenario(
    NAME,
    "a worker frozen (SIGSTOP) 45 s while holding work, then resumed: 0 lost, 0 duplicates, 0 extra refreshes",
    run,
)
