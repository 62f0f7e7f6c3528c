"""Hostile kwargs: every message naming our task with an id gets exactly one final outcome.

The hand-written cases of chaos.hostile_kwargs (about 130, raw kombu messages among them; those
naming a real bulk name a dry run recorded first), a tenth of the run as plain valid requests,
and the rest arbitrary JSON kwargs drawn by hypothesis from the seed. In three waves, each
drained before the next: the kwargs cases and valid requests shuffled together; the fixed
resends of the requests rejected in that wave; then the raw messages (last, so one that kills
workers cannot hide what the others do).

Promise: 0 lost, 0 duplicate finals, 0 extra provider refreshes (only valid requests refresh:
a coerced `force: "yes"` or `verify: "true"` that refreshes counts as extra), no task sequence
refreshed without a boolean `force`, and every resent-fixed request refreshed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Final

from chaos.hostile_kwargs import HostileCase, fixed_cases, hypothesis_cases
from chaos.report import SUCCESS_STATUSES, Check, FinalRecord, Row, Sent
from chaos.rig import SITE_CODE, Rig, RigConfig
from chaos.scenario import RunOptions, Scenario, finish
from chaos.workload import Outgoing, PackagePool, new_task_id, send_all, valid_requests
from config.settings import Settings
from producers.bulk import enqueue_bulk

__all__ = ["SCENARIO"]

NAME: Final = "hostile-kwargs"
VALID_SHARE: Final = 0.1


def to_outgoing(case: HostileCase, rng: random.Random) -> Outgoing:
    sent = Sent(new_task_id(rng), case.label, valid=case.valid, package_id=case.package_id if case.valid else None)
    return Outgoing(sent, kwargs=case.kwargs, raw=case.raw)


def first_statuses(finals: Sequence[FinalRecord]) -> dict[str, str]:
    statuses: dict[str, str] = {}
    for record in finals:
        if record.task_id is not None:
            statuses.setdefault(record.task_id, record.status)
    return statuses


def force_check(rig: Rig, cases: Sequence[tuple[HostileCase, Outgoing]], statuses: dict[str, str]) -> Check:
    """Task sequences sent with a non-boolean `force` were not refreshed (beyond valid requests' own)."""
    accepted = rig.accepted_refreshes()
    coerced = []
    for case, _message in cases:
        if "force" not in case.tags or case.package_id is None:
            continue
        legitimate = sum(
            1
            for other, message in cases
            if other.valid
            and other.package_id == case.package_id
            and statuses.get(message.sent.task_id) in SUCCESS_STATUSES
        )
        if accepted.get(case.package_id, 0) > legitimate:
            coerced.append(case.label)
    return Check(
        "no task sequence refreshed without a boolean force",
        not coerced,
        f"refreshed anyway: {sorted(set(coerced))}" if coerced else "",
    )


def resend_check(cases: Sequence[tuple[HostileCase, Outgoing]], statuses: dict[str, str]) -> Check:
    resent = [(case, message) for case, message in cases if case.phase == 2]
    missing = [case.label for case, message in resent if statuses.get(message.sent.task_id) not in SUCCESS_STATUSES]
    return Check(
        "requests resent fixed after a rejection were refreshed",
        not missing,
        f"{len(resent) - len(missing)} of {len(resent)}; not refreshed: {sorted(missing)}" if missing else "",
    )


def recorded_bulk(rig: Rig, package_id: str) -> str:
    """The id of a real bulk job (a dry run over one package: it refreshes nothing), for cases to name."""
    settings = Settings(
        broker_url=rig.redis_server.url, redis_url=rig.redis_server.url, key_prefix=rig.keys.prefix, queue=rig.queue
    )
    criteria = {"site_code": SITE_CODE, "package_ids": [package_id]}
    return enqueue_bulk(rig.producer, criteria, dry_run=True, settings=settings).bulk_id


def run(options: RunOptions) -> Row:
    rng = random.Random(options.seed)
    config = RigConfig(
        emulator={"package_count": max(200, options.requests + options.requests // 2)},
        flower=options.flower,
        supervise=True,
    )
    with Rig(options.workdir / NAME, config, seed=options.seed) as rig:
        pool = PackagePool(rig.catalogue(), rng)

        def take(task_sequence: bool) -> dict[str, Any]:
            return pool.take(task_sequence=task_sequence)

        cases = fixed_cases(take, rng, bulk_id=recorded_bulk(rig, rig.catalogue()[0]["PackageID"]))
        valid_count = max(1, round(options.requests * VALID_SHARE))
        drawn = max(0, options.requests - len(cases) - valid_count)
        cases += list(hypothesis_cases(drawn, seed_value=options.seed))
        pairs = [(case, to_outgoing(case, rng)) for case in cases]
        pairs += [
            (HostileCase("valid", kwargs=dict(m.kwargs or {}), valid=True, package_id=m.sent.package_id), m)
            for m in valid_requests(pool, rng, valid_count)
        ]
        kwargs_first = [m for case, m in pairs if case.phase == 1 and case.raw is None]
        resends = [m for case, m in pairs if case.phase == 2]
        raw = [m for case, m in pairs if case.raw is not None]
        rng.shuffle(kwargs_first)
        rng.shuffle(raw)
        first_send = send_all(rig, kwargs_first)
        # The fixed resends follow the rejections they correct, once those are final.
        rejected_first = {m.sent.task_id for case, m in pairs if case.label.startswith("rejected first")}
        rig.drain(rejected_first, until_all=True)
        send_all(rig, resends)
        rig.drain([m.sent.task_id for m in kwargs_first + resends])
        # Raw bodies last: one that kills a worker must not hide what the kwargs cases do.
        send_all(rig, raw)
        rig.drain([m.sent.task_id for _c, m in pairs])
        statuses = first_statuses(rig.ledger.finals)
        return finish(
            rig,
            NAME,
            [message.sent for _case, message in pairs],
            first_send_epoch_s=first_send,
            checks=[force_check(rig, pairs, statuses), resend_check(pairs, statuses)],
            details={"fixed_cases": len(cases) - drawn, "hypothesis_cases": drawn, "valid_requests": valid_count},
        )


SCENARIO: Final = Scenario(
    NAME,
    "hostile kwargs and raw messages: each gets exactly one final, only valid requests refresh, once",
    run,
)
