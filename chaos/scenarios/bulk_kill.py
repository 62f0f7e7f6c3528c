"""Bulk SIGKILL: a bulk of 1,000 packages through the API, one worker SIGKILLed at 30 % of it.

The API (`sccm-refresh api`, a child process with the workers' settings) takes
`POST /v1/bulk-refreshes` naming exactly `bulk_size` STORAGE_DIRECT packages; the workers
enumerate them and run them as children through the bulk's window. Once 30 % of the children
have a final outcome, worker A is SIGKILLed (with whatever children, slots and locks it holds)
and restarted, as systemd would. What it held comes back through the broker's recovery; children
it had taken from the bulk's window and never enqueued come back through the bulk's pump.

Children are matched by request id (`<bulk id>:<PackageID>`, deterministic). A child enters the
pipeline when the bulk's window takes it (watched in the bulk's `taken` hash every
TAKEN_WATCH_S); its lateness counts from then or from the restart, whichever is later (a child
never seen taken was taken and finished between two looks: on time).

Promise: 0 lost (every child one final), 0 duplicate finals, 0 extra provider refreshes, every
child final within 60 s, the bulk `done` with every child counted (GET /v1/bulk-refreshes/{id}),
and the kill landed mid-bulk.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Final

from redis import exceptions as redis_errors

from chaos.report import LATENESS_BOUND_S, SUCCESS_STATUSES, Check, FinalRecord, Row, Sent
from chaos.rig import DRAIN_GRACE_S, SITE_CODE, Rig
from chaos.scenario import Disruptor, RunOptions, Scenario, finish, rig_config
from chaos.workload import STORAGE_DIRECT
from testing.bulk_api import OVER_STATES, BulkApi
from worker.domain.criteria import DEFAULT_PACKAGE_CLASSES
from worker.domain.ids import child_request_id
from worker.stores.redis_client import redis_from_url

__all__ = ["SCENARIO"]

NAME: Final = "bulk-kill"
KILL_AT_SHARE: Final = 0.3
# The emulator's catalogue with no STORAGE_COMPRESS: about 92% STORAGE_DIRECT non-task-sequence
# packages (4% task sequences, 4% STORAGE_NO_SOURCE); a little more, the rest excluded.
_ELIGIBLE_SHARE: Final = 0.62  # STORAGE_DIRECT packages of the default classes (SMS_Package, SMS_DriverPackage)
_SPARE: Final = 8
TAKEN_WATCH_S: Final = 0.05
STATUS_POLL_S: Final = 0.25
SHARE_TIMEOUT_S: Final = 300.0
_SETTLE_S: Final = 5.0  # after the bulk is over: late duplicates, the pump's last round


@dataclass
class BulkLog:
    kills: int = 0
    finals_at_kill: int = 0
    ended_epoch_s: float | None = None
    status: dict[str, Any] | None = None
    submitted_epoch_s: float = 0.0
    over_epoch_s: float | None = None


class TakenWatch:
    """When each child was first seen in the bulk's `taken` hash (the window dispatched it)."""

    def __init__(self, rig: Rig, bulk_id: str) -> None:
        self._client = redis_from_url(rig.redis_server.url, retries=0, socket_timeout_s=2.0)
        self._key = rig.keys.bulk_keys(bulk_id).taken
        self.first_seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="chaos-taken-watch", daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(TAKEN_WATCH_S):  # another process's hash: no event to await
            try:
                names = self._client.hkeys(self._key)
            except redis_errors.RedisError:
                continue  # a missed look only makes a child look on time
            now = time.time()
            for name in names:
                self.first_seen.setdefault(name.decode() if isinstance(name, bytes) else str(name), now)

    def __enter__(self) -> TakenWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self._client.close()


def eligible(catalogue: list[dict[str, Any]]) -> list[str]:
    """STORAGE_DIRECT packages of the default classes: a bulk's default selection refreshes each once."""
    return [
        str(p["PackageID"])
        for p in catalogue
        if p["PkgSourceFlag"] == STORAGE_DIRECT and p["class"] in DEFAULT_PACKAGE_CLASSES
    ]


def child_finals(rig: Rig, bulk_id: str) -> list[FinalRecord]:
    """The children's finals, keyed by request id (their task ids are the worker's own)."""
    prefix = f"{bulk_id}:"
    return [
        replace(record, task_id=record.request_id)
        for record in rig.ledger.finals
        if record.request_id is not None and record.request_id.startswith(prefix)
    ]


def kill_at_share(rig: Rig, bulk_id: str, size: int, log: BulkLog) -> None:
    """The disruption: when KILL_AT_SHARE of the children are final, SIGKILL worker A and restart it."""
    victim = rig.workers[0]
    deadline = time.monotonic() + SHARE_TIMEOUT_S
    while time.monotonic() < deadline:
        rig.ledger.poll()
        log.finals_at_kill = len(child_finals(rig, bulk_id))
        if log.finals_at_kill >= KILL_AT_SHARE * size:
            break
        time.sleep(STATUS_POLL_S / 5)  # other processes' state: no event to await
    victim.kill()
    log.kills += 1
    victim.start()
    log.ended_epoch_s = time.time()


def wait_over(rig: Rig, api: BulkApi, bulk_id: str, log: BulkLog) -> None:
    """Until the bulk is over, or no child final for the lateness bound (plus a little) after the fault."""
    progress_epoch_s = time.time()
    seen = 0
    while True:
        rig.ledger.poll()
        now = time.time()
        finals = len(child_finals(rig, bulk_id))
        if finals != seen:
            seen, progress_epoch_s = finals, now
        log.status = api.status(bulk_id)
        if log.status["state"] in OVER_STATES:
            log.over_epoch_s = now
            return
        if now - max(progress_epoch_s, log.ended_epoch_s or 0.0) > LATENESS_BOUND_S + DRAIN_GRACE_S:
            return
        time.sleep(STATUS_POLL_S)  # the API's state: polled, as a client would


def bulk_checks(log: BulkLog, size: int, killer: Disruptor) -> list[Check]:
    """The bulk's own promises: over as `done` with every child counted, and killed mid-way."""
    status = log.status or {}
    counts: dict[str, int] = status.get("counts") or {}
    succeeded = sum(count for name, count in counts.items() if name in SUCCESS_STATUSES)
    done = status.get("state") == "done" and status.get("total") == size and succeeded == size
    return [
        Check(
            "the bulk ended done, every child counted",
            done,
            f"state {status.get('state')}, total {status.get('total')}, counts {counts}",
        ),
        Check(
            "the kill landed mid-bulk",
            killer.error is None and log.kills == 1 and 0 < log.finals_at_kill < size,
            killer.error or f"killed with {log.finals_at_kill} of {size} children final",
        ),
    ]


def run(options: RunOptions) -> Row:
    size = options.bulk_size
    config = rig_config(options, compress_share=0.0, package_count=math.ceil((size + _SPARE) / _ELIGIBLE_SHARE))
    with Rig(options.workdir / NAME, config, seed=options.seed) as rig:
        packages = eligible(rig.catalogue())
        if len(packages) < size:
            raise RuntimeError(f"the emulated catalogue has {len(packages)} eligible packages, {size} needed")
        selected, spare = packages[:size], packages[size:]
        with BulkApi(rig.worker_env, options.workdir / NAME / "api") as api:
            log = BulkLog(submitted_epoch_s=time.time())
            bulk_id = api.submit(
                {"site_code": SITE_CODE, "pkg_source_flags": [STORAGE_DIRECT], "exclude_package_ids": spare}
            )
            rig.last_send_epoch_s = log.submitted_epoch_s
            with TakenWatch(rig, bulk_id) as taken:
                killer = Disruptor("bulk-killer", lambda: kill_at_share(rig, bulk_id, size, log)).start()
                killer.join(SHARE_TIMEOUT_S + 90)
                wait_over(rig, api, bulk_id, log)
                rig.drain((), quiet_s=_SETTLE_S)
        finals = child_finals(rig, bulk_id)
        final_at = {record.task_id: record.at_ms / 1000.0 for record in finals}
        sent = [
            Sent(
                child,
                "bulk child",
                valid=True,
                package_id=package_id,
                # Never seen taken: taken and final between two looks, so on time.
                sent_epoch_s=taken.first_seen.get(child, final_at.get(child)),
            )
            for package_id in selected
            for child in [child_request_id(bulk_id, package_id)]
        ]
        over_s = None if log.over_epoch_s is None else round(log.over_epoch_s - log.submitted_epoch_s, 1)
        return finish(
            rig,
            NAME,
            sent,
            first_send_epoch_s=log.submitted_epoch_s,
            fault_ended_epoch_s=log.ended_epoch_s,
            finals=finals,
            checks=bulk_checks(log, size, killer),
            details={
                "bulk_id": bulk_id,
                "bulk_size": size,
                "finals_at_kill": log.finals_at_kill,
                "bulk_over_after_s": over_s,
                "bulk_status": log.status,
                "children_seen_taken": len(taken.first_seen),
            },
        )


SCENARIO: Final = Scenario(
    NAME,
    "a bulk of 1,000 through the API, a worker SIGKILLed at 30 %: done, one final per child, 0 extra refreshes",
    run,
)
