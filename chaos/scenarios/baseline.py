"""Baseline: valid requests over NTLM, every package class, STORAGE_COMPRESS media that become ready.

Nothing is broken on purpose: the row every other scenario is compared with. Promise: each
request ends with exactly one final, its refresh lands once, and each ends as its package
allows (STORAGE_NO_SOURCE fails with ReturnValue 50, every other package is refreshed, a
medium that was not ready is waited for).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, Final

from chaos.report import SUCCESS_STATUSES, Check, FinalRecord, Row
from chaos.rig import Rig
from chaos.scenario import RunOptions, Scenario, finish, rig_config
from chaos.workload import STORAGE_NO_SOURCE, Outgoing, PackagePool, send_all, valid_requests

__all__ = ["SCENARIO", "expected_status_check"]

NAME: Final = "baseline"
VERIFY_SHARE: Final = 0.3
MEDIUM_READY_AFTER_S: Final = 1.0


def expected_status_check(
    outgoing: Sequence[Outgoing], packages: Mapping[str, Mapping[str, Any]], finals: Sequence[FinalRecord]
) -> Check:
    """Each valid request ended as its package allows: refreshed, or failed on STORAGE_NO_SOURCE."""
    first: dict[str, str] = {}
    for record in finals:
        if record.task_id is not None:
            first.setdefault(record.task_id, record.status)
    wrong = []
    for message in outgoing:
        status = first.get(message.sent.task_id)
        package = packages[message.sent.package_id or ""]
        allowed = {"failed"} if package["PkgSourceFlag"] == STORAGE_NO_SOURCE else SUCCESS_STATUSES
        if status is not None and status not in allowed:
            wrong.append(f"{package['PackageID']}={status}")
    return Check(
        "each request ended as its package allows", not wrong, f"{len(wrong)} wrong, e.g. {wrong[:5]}" if wrong else ""
    )


def run(options: RunOptions) -> Row:
    rng = random.Random(options.seed)
    config = rig_config(
        options, compress_share=0.15, medium_not_ready_share=0.5, medium_ready_after_s=MEDIUM_READY_AFTER_S
    )
    with Rig(options.workdir / NAME, config, seed=options.seed) as rig:
        catalogue = {package["PackageID"]: package for package in rig.catalogue()}
        waiting_media = {pid for pid, package in catalogue.items() if package["medium_ready"] is False}
        pool = PackagePool(catalogue.values(), rng)
        outgoing = valid_requests(
            pool,
            rng,
            options.requests,
            verify_share=VERIFY_SHARE,
            pick=lambda p, _r: p.take(task_sequence=None, source_flags=None),
        )
        first_send = send_all(rig, outgoing)
        rig.drain([m.sent.task_id for m in outgoing])
        finals = rig.ledger.finals
        sent_waiting = {m.sent.package_id for m in outgoing} & waiting_media
        checks = [expected_status_check(outgoing, catalogue, finals)]
        return finish(
            rig,
            NAME,
            [m.sent for m in outgoing],
            first_send_epoch_s=first_send,
            checks=checks,
            details={"media_not_ready_at_start": len(sent_waiting)},
        )


SCENARIO: Final = Scenario(
    NAME,
    "exactly one final per request, each refresh lands once, each request ends as its package allows",
    run,
)
