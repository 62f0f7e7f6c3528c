"""The invoke fence's counter-example: a lost Invoke while an older refresh is pending.

For each of PAIRS packages P: request A refreshes P and ends accepted while Distribution Manager
is held, so P shows ActionInProgress 1. Then request B for P reads P (ActionInProgress 1, the
fence records it) and invokes; the emulator loses that Invoke (`lose_invoke_while_pending`: not
run, not answered). DistMgr is released: A's pass ends and raises SourceVersion, and only then
does B's connection drop. B's next try reads P again: SourceVersion rose and nothing is pending,
which looks exactly like B's Invoke having landed, but it was A's. A fence that took that for
proof would end B accepted with nothing refreshed for it (stale content on every distribution
point). B must invoke again.

Promise: 0 lost, 0 duplicate finals, 0 extra provider refreshes; every B's Invoke was lost while
A's refresh was pending; per package the provider shows 2 accepted Invokes (A's, and B's second),
and B's final is accepted. The size is fixed (PAIRS pairs, `--requests` does not apply): PAIRS is
the sites' default provider slot count, so the lost Invokes hold every slot at once.
"""

from __future__ import annotations

import random
import time
from typing import Final

from chaos.report import Check, Row
from chaos.rig import Rig
from chaos.scenario import RunOptions, Scenario, finish, rig_config
from chaos.workload import Outgoing, PackagePool, send_all, valid_requests

__all__ = ["SCENARIO"]

NAME: Final = "fence-counter-example"
PAIRS: Final = 3
DISTMGR_TIME_PER_PACKAGE_S: Final = 1.0
LOST_TIMEOUT_S: Final = 60.0
# The emulator's counters (emulator/listener/handler.py).
_LOST: Final = "lost_invokes_while_pending"
_DROPPED: Final = "lost_invokes_dropped"


def run(options: RunOptions) -> Row:
    rng = random.Random(options.seed)
    config = rig_config(options, compress_share=0.0, distmgr_time_per_package_s=DISTMGR_TIME_PER_PACKAGE_S)
    with Rig(options.workdir / NAME, config, seed=options.seed) as rig:
        provider, faults, stats = rig.emulator.provider, rig.emulator.faults, rig.emulator.stats
        catalogue = {package["PackageID"]: package for package in rig.catalogue()}
        first = valid_requests(PackagePool(catalogue.values(), rng), rng, PAIRS, label="A (older refresh)")
        packages = [m.sent.package_id or "" for m in first]
        second = valid_requests(
            PackagePool([catalogue[p] for p in packages], rng), rng, PAIRS, label="B (Invoke lost while A pending)"
        )
        provider.control_distmgr(hold=True)
        first_send = send_all(rig, first)
        rig.drain([m.sent.task_id for m in first], until_all=True)
        for package_id in packages:
            faults.lose_invoke_while_pending(package_id)
        send_all(rig, second)
        stats.wait_for(_LOST, PAIRS, timeout_s=LOST_TIMEOUT_S)
        provider.control_distmgr(hold=False)  # A's passes run; then the lost connections drop
        stats.wait_for(_DROPPED, stats.count(_LOST), timeout_s=LOST_TIMEOUT_S)
        ended = time.time()
        everyone = first + second
        rig.drain([m.sent.task_id for m in everyone], since_epoch_s=ended)
        return finish(
            rig,
            NAME,
            [m.sent for m in everyone],
            first_send_epoch_s=first_send,
            fault_ended_epoch_s=ended,
            checks=pair_checks(rig, first, second, lost=stats.count(_LOST)),
            details={"packages": packages, "lost_invokes": stats.count(_LOST)},
        )


def pair_checks(rig: Rig, first: list[Outgoing], second: list[Outgoing], *, lost: int) -> list[Check]:
    """The counter-example's own promises, from the finals and the provider's call log."""
    statuses = {record.task_id: record.status for record in rig.ledger.finals}
    accepted = rig.accepted_refreshes()
    counts = {m.sent.package_id or "": accepted.get(m.sent.package_id or "", 0) for m in first}
    first_ok = [statuses.get(m.sent.task_id) for m in first]
    second_ok = [statuses.get(m.sent.task_id) for m in second]
    return [
        Check(
            "every B's Invoke was lost while A's refresh was pending",
            lost == len(second) and first_ok == ["accepted"] * len(first),
            f"lost {lost} of {len(second)}; A finals {first_ok}",
        ),
        Check(
            "B invoked again: 2 accepted Invokes per package (A's, B's second)",
            set(counts.values()) == {2},
            f"accepted Invokes per package: {counts}",
        ),
        Check("every B ended accepted", second_ok == ["accepted"] * len(second), f"B finals {second_ok}"),
    ]


SCENARIO: Final = Scenario(
    NAME,
    "B's Invoke lost while A's refresh of the same package is pending: B invokes again, ends accepted",
    run,
)
