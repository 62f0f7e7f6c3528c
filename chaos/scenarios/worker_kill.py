"""Worker SIGKILL: one of the two workers is killed twice mid-run, mid-exchange, and restarted.

The provider answers in 0-250 ms (uniform) and most requests ask to `verify` (poll until
DistMgr bumps SourceVersion, 0.4 s after an accepted refresh), so a request spends most of
its run between RefreshPkgSource accepted and its final outcome published. Each kill waits
(bounded) until the victim holds such a request: one it received (its log says so), whose
package the provider has already refreshed, with no final yet. The victim's messages (running,
prefetched, counting down) come back once its alive key lapses (the broker's recovery, within
about 20 s) and the surviving worker (or the restarted one) runs them again; lateness counts from
the moment the restarted worker is ready.

Promise: 0 lost, 0 duplicate finals, 0 extra provider refreshes (a redelivered request whose
refresh already landed must not refresh again), and both kills landed mid-exchange.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from typing import Final

from chaos.report import Check, Row
from chaos.rig import SITE_CODE, Rig, RigConfig
from chaos.scenario import Disruptor, RunOptions, Scenario, finish, rig_config
from chaos.workload import Outgoing, PackagePool, send_all, valid_requests
from embedded.worker_process import WorkerProcess

__all__ = ["SCENARIO", "crash_rig_config", "received_by"]

NAME: Final = "worker-sigkill"
KILLS: Final = 2
VERIFY_SHARE: Final = 0.8
LATENCY_MEAN_S: Final = 0.125  # uniform on [0, 250 ms)
DISTMGR_DELAY_S: Final = 0.4
# Finals (as a share of requests) before each kill: early in the run, then mid-run.
KILL_AT_SHARE: Final = (0.1, 0.45)
IN_WINDOW_TIMEOUT_S: Final = 20.0
SHARE_TIMEOUT_S: Final = 120.0
_RECEIVED: Final = re.compile(r"Task sccm\.refresh_package\[(?P<task_id>[^\]]+)\] received")
_POLL_S: Final = 0.02
_READY: Final = " ready."  # the line a celery worker logs once it consumes


@dataclass
class KillLog:
    landed_mid_exchange: int = 0
    kills: int = 0
    held_at_kill: list[int] = field(default_factory=list)
    ended_epoch_s: float | None = None  # the last restarted worker ready again


def received_by(worker: WorkerProcess) -> set[str]:
    """Task ids the worker's current incarnation logged as received (since its last "ready.")."""
    output = worker.output()
    current = output[output.rfind(_READY) :] if _READY in output else output
    return {match["task_id"] for match in _RECEIVED.finditer(current)}


def in_window(rig: Rig, worker: WorkerProcess, ignore: set[str], package_of: dict[str, str]) -> list[str]:
    """Requests the worker holds whose refresh the provider accepted and whose final is not out yet."""
    rig.ledger.poll()
    done = rig.ledger.final_task_ids()
    accepted = rig.accepted_refreshes()
    return [
        task_id for task_id in received_by(worker) - ignore - done if accepted.get(package_of.get(task_id, ""), 0) > 0
    ]


def kill_twice(rig: Rig, victim: WorkerProcess, package_of: dict[str, str], requests: int, log: KillLog) -> None:
    """The disruption: wait for the moment, SIGKILL, restart; twice. Bounded waits throughout."""
    ignore: set[str] = set()
    for share in KILL_AT_SHARE:
        # First the point in the run (bounded generously: the pace depends on the machine), then
        # the moment: the victim holding a request whose refresh landed and whose final is not out.
        reached = time.monotonic() + SHARE_TIMEOUT_S
        while rig.finals_seen() < share * requests and time.monotonic() < reached:
            time.sleep(_POLL_S)  # other processes' state: no event to await
        deadline = time.monotonic() + IN_WINDOW_TIMEOUT_S
        held: list[str] = []
        while time.monotonic() < deadline:
            held = in_window(rig, victim, ignore, package_of)
            if held:
                break
            time.sleep(_POLL_S)
        victim.kill()
        log.kills += 1
        log.held_at_kill.append(len(held))
        log.landed_mid_exchange += bool(held)
        # The next kill looks only at what the new incarnation receives (received_by reads the
        # current incarnation's log), so nothing needs ignoring.
        victim.start()
        log.ended_epoch_s = time.time()


def crash_rig_config(options: RunOptions) -> RigConfig:
    """The pipeline of a scenario about a worker crashing or freezing mid-exchange."""
    return rig_config(
        options,
        # As many provider slots as worker threads: the scenario is about crashes, so requests
        # should be mid-exchange when the disruption lands, not waiting for a slot.
        worker_env={f"SCCM_REFRESH_PROVIDERS__{SITE_CODE}__MAX_CONCURRENCY": "8"},
        compress_share=0.0,
        latency_s=LATENCY_MEAN_S,
        latency_distribution="uniform",
        distmgr_delay_s=DISTMGR_DELAY_S,
    )


def run(options: RunOptions) -> Row:
    rng = random.Random(options.seed)
    config = crash_rig_config(options)
    with Rig(options.workdir / NAME, config, seed=options.seed) as rig:
        pool = PackagePool(rig.catalogue(), rng)
        outgoing: list[Outgoing] = valid_requests(pool, rng, options.requests, verify_share=VERIFY_SHARE)
        package_of = {m.sent.task_id: m.sent.package_id or "" for m in outgoing}
        log = KillLog()
        victim = rig.workers[0]
        pids = [victim.pid]
        killer = Disruptor("killer", lambda: kill_twice(rig, victim, package_of, len(outgoing), log)).start()
        first_send = send_all(rig, outgoing)
        killer.join(KILLS * (SHARE_TIMEOUT_S + IN_WINDOW_TIMEOUT_S + 90))
        pids.append(victim.pid)
        rig.drain([m.sent.task_id for m in outgoing], since_epoch_s=log.ended_epoch_s)
        checks = [
            Check(
                f"{KILLS} kills landed mid-exchange",
                killer.error is None and log.landed_mid_exchange == KILLS,
                killer.error or f"{log.landed_mid_exchange} of {log.kills} kills found the victim mid-exchange",
            ),
        ]
        return finish(
            rig,
            NAME,
            [m.sent for m in outgoing],
            first_send_epoch_s=first_send,
            fault_ended_epoch_s=log.ended_epoch_s,
            checks=checks,
            details={"kills": log.kills, "in_window_at_kill": log.held_at_kill, "victim_pids": pids},
        )


SCENARIO: Final = Scenario(
    NAME,
    "a worker SIGKILLed twice mid-exchange: 0 lost, 0 duplicate finals, 0 extra provider refreshes",
    run,
)
